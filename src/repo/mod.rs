//! The backup repository: published sets, content-addressed objects shared
//! by sets, drill reports, its versioned `config`, and one lock that
//! serialises writers; every byte goes through the [`Storage`] interface.
//!
//! Keys: `config`, `lock`, `holders/`, `sets/<id>/` (`sets/.trash-<id>/` while prune removes it), `objects/<h0h1>/...`,
//! `drills/<set>--<time>.json` (README "Repository layout").

pub mod chunk_list;
pub mod config;
pub mod contents;
pub mod digest;
pub mod lock;
pub mod manifest;
pub mod objects;
pub mod set;
pub mod storage;
pub mod sweep;
pub mod transfer;

use std::fs;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};

use crate::error::config_error;
use config::{ChunkerParams, REPO_FORMAT, RepoConfig};

pub use lock::{ExclusiveLock, SharedLock};
pub use objects::ObjectStore;
pub use set::{SetInfo, WorkSet};
pub use storage::{LocalStorage, Storage};

use crate::settings::RepoSpec;

/// Prefix of sets still being written; never listed as sets.
pub const WORK_PREFIX: &str = storage::local::WORK_PREFIX;

/// The format of a repository without a `config` file (written before it existed).
pub const FORMAT_WITHOUT_CONFIG: u32 = 1;

/// Either lock: what a command holds to write a small record (a drill
/// report), which only needs writers of sets kept out, not other readers.
pub trait Held: sealed::Sealed {}
impl Held for ExclusiveLock {}
impl Held for SharedLock {}
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ExclusiveLock {}
    impl Sealed for super::SharedLock {}
}

pub struct Repository {
    /// Where it is, for messages (a directory or an `s3://` URL).
    location: String,
    /// The directory of a local repository.
    local: Option<PathBuf>,
    storage: Arc<dyn Storage>,
    /// `None` for a repository written before `config` existed (format 1).
    config: Option<RepoConfig>,
}

impl Repository {
    /// Opens the repository at `root`, creating it (owner-only) if needed,
    /// with a `config` file: a new repository gets one, and so does one
    /// written before `config` existed, by the first backup into it.
    pub fn open_or_create(root: &Path) -> Result<Repository> {
        Self::open_or_create_at(&RepoSpec::Local(root.to_path_buf()))
    }

    /// [`Self::open_or_create`] for any repository (local or S3).
    pub fn open_or_create_at(spec: &RepoSpec) -> Result<Repository> {
        if let Some(root) = spec.local() {
            for dir in [root.to_path_buf(), root.join("sets"), root.join("objects")] {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| {
                        format!("while creating repository directory {}", dir.display())
                    })?;
            }
        }
        if let RepoSpec::S3(s3) = spec {
            // Allowed (issue 14), but whoever runs the storage can read it.
            tracing::warn!(
                "the repository {} is not encrypted: the storage provider can read the mail in it",
                s3.url()
            );
        }
        let storage = storage::open(spec)?;
        let config = match read_config(storage.as_ref())? {
            Some(config) => config,
            None => create_config(storage.as_ref())?,
        };
        Ok(Repository {
            location: spec.to_string(),
            local: spec.local().map(Path::to_path_buf),
            storage,
            config: Some(config),
        })
    }

    /// Opens an existing repository; refuses one of a newer format than
    /// this release knows (exit 2).
    pub fn open(root: &Path) -> Result<Repository> {
        Self::open_at(&RepoSpec::Local(root.to_path_buf()))
    }

    /// [`Self::open`] for any repository (local or S3).
    pub fn open_at(spec: &RepoSpec) -> Result<Repository> {
        match Self::open_if_exists_at(spec)? {
            Some(repo) => Ok(repo),
            None => bail!("no kcbackup repository at {spec}"),
        }
    }

    /// Like [`Self::open`], `None` when there is no repository at `root` yet.
    pub fn open_if_exists(root: &Path) -> Result<Option<Repository>> {
        Self::open_if_exists_at(&RepoSpec::Local(root.to_path_buf()))
    }

    /// [`Self::open_if_exists`] for any repository: a local one is there
    /// once it has `sets/`, a remote one once it has its `config`.
    pub fn open_if_exists_at(spec: &RepoSpec) -> Result<Option<Repository>> {
        if let Some(root) = spec.local()
            && !root.join("sets").is_dir()
        {
            return Ok(None);
        }
        let storage = storage::open(spec)?;
        let config = read_config(storage.as_ref())?;
        if config.is_none() && spec.local().is_none() {
            return Ok(None);
        }
        Ok(Some(Repository {
            location: spec.to_string(),
            local: spec.local().map(Path::to_path_buf),
            storage,
            config,
        }))
    }

    /// Where the repository is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The directory of a local repository (`None` on object storage).
    pub fn local_root(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// All I/O of the repository.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The repository's config; `None` when it was written before `config`
    /// existed and no backup has run into it since.
    pub fn config(&self) -> Option<&RepoConfig> {
        self.config.as_ref()
    }

    /// The repository format: the config's, or 1 without one.
    pub fn format(&self) -> u32 {
        self.config
            .as_ref()
            .map_or(FORMAT_WITHOUT_CONFIG, |c| c.format)
    }

    /// The chunker parameters new dumps are cut with.
    pub fn chunker(&self) -> ChunkerParams {
        self.config
            .as_ref()
            .map_or_else(ChunkerParams::default, |c| c.chunker)
    }

    /// The writer's lock; fails at once if another run holds it, naming
    /// it. `operation` is what others are told this run is doing.
    pub fn lock_exclusive(&self, operation: &str) -> Result<ExclusiveLock> {
        self.storage
            .lock_exclusive(operation, std::time::Duration::ZERO)
    }

    /// [`Self::lock_exclusive`], waiting up to `wait` for the other run
    /// (`--lock-wait`); zero fails at once.
    pub fn lock_exclusive_waiting(
        &self,
        operation: &str,
        wait: std::time::Duration,
    ) -> Result<ExclusiveLock> {
        self.storage.lock_exclusive(operation, wait)
    }

    /// The readers' lock (verify, restore, drill); fails at once while a
    /// writer runs. Works on a read-only repository.
    pub fn lock_shared(&self, operation: &str) -> Result<SharedLock> {
        self.storage
            .lock_shared(operation, std::time::Duration::ZERO)
    }

    /// [`Self::lock_shared`], waiting up to `wait` for a writer to finish.
    pub fn lock_shared_waiting(
        &self,
        operation: &str,
        wait: std::time::Duration,
    ) -> Result<SharedLock> {
        self.storage.lock_shared(operation, wait)
    }

    /// The content-addressed store of file data shared by all sets.
    pub fn objects(&self) -> Result<ObjectStore> {
        Ok(ObjectStore::on(self.storage.clone(), "objects"))
    }

    /// Removes work directories and half-written objects left by a crashed
    /// or killed run. Needs the exclusive lock, so no live run's files are touched.
    pub fn remove_leftovers(&self, lock: &ExclusiveLock) -> Result<Vec<String>> {
        self.storage.remove_leftovers(lock)
    }

    /// Starts a new set in a hidden work directory.
    pub fn begin_set(&self, _lock: &ExclusiveLock, started: DateTime<Utc>) -> Result<WorkSet> {
        WorkSet::create(self.storage.clone(), started)
    }

    /// Starts set `id` (copied from another repository, so its id is
    /// kept); `None` when a set of that id is already there.
    pub fn begin_copy(&self, _lock: &ExclusiveLock, id: &str) -> Result<Option<WorkSet>> {
        WorkSet::create_named(self.storage.clone(), id)
    }

    /// Every published set, oldest first.
    pub fn sets(&self) -> Result<Vec<SetInfo>> {
        let mut sets = Vec::new();
        for id in self.storage.set_ids()? {
            sets.push(SetInfo::load(self.storage.clone(), &id)?);
        }
        sets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sets)
    }

    /// Writes a small record (a drill report) once, under `<prefix>/<stem>.json`
    /// or, when that name is taken, `<stem>-2.json` ...: never replacing
    /// one. Needs a lock, so no prune removes records while one is written.
    /// Returns the key it went to.
    pub fn write_record(
        &self,
        _lock: &impl Held,
        prefix: &str,
        stem: &str,
        data: &[u8],
    ) -> Result<String> {
        for n in 1..1000 {
            let key = match n {
                1 => format!("{prefix}/{stem}.json"),
                n => format!("{prefix}/{stem}-{n}.json"),
            };
            if self.storage.put_if_absent(&key, data)? {
                return Ok(key);
            }
        }
        bail!("too many records named {prefix}/{stem}*.json")
    }

    /// Every record under `prefix` with its bytes, by key, in key order.
    /// Records that cannot be read are skipped (and logged): a reader of
    /// records (list's "last drill") must not fail on one bad file.
    pub fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut keys = Vec::new();
        self.storage.list(prefix, &mut |key, _| {
            if key.ends_with(".json") {
                keys.push(key.to_string());
            }
            Ok(())
        })?;
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut bytes = Vec::new();
            match self
                .storage
                .get(&key)
                .and_then(|mut r| Ok(r.read_to_end(&mut bytes)?))
            {
                Ok(_) => out.push((key, bytes)),
                Err(e) => tracing::debug!("skipping record {key}: {e:#}"),
            }
        }
        Ok(out)
    }

    /// Resolves `latest` (the newest COMPLETE, intact set) or an exact set id.
    pub fn resolve(&self, spec: &str) -> Result<SetInfo> {
        let sets = self.sets()?;
        if spec == "latest" {
            return sets
                .into_iter()
                .rev()
                .find(|s| s.is_complete())
                .context("the repository holds no complete set");
        }
        let latest = sets
            .iter()
            .rev()
            .find(|s| s.is_complete())
            .map(|s| s.id.clone());
        let ids: Vec<&str> = sets.iter().map(|s| s.id.as_str()).collect();
        let unknown = unknown_set(spec, &ids, latest.as_deref(), &self.location);
        match sets.into_iter().find(|s| s.id == spec) {
            Some(set) => Ok(set),
            None => config_error(unknown),
        }
    }
}

/// The `config` of the repository, `None` when it has none (format 1).
/// A format newer than this release knows is refused with one line (exit 2),
/// before the rest of the file is parsed: a newer format may change it.
fn read_config(storage: &dyn Storage) -> Result<Option<RepoConfig>> {
    let mut bytes = Vec::new();
    match storage.get(storage::CONFIG) {
        Ok(mut r) => r.read_to_end(&mut bytes).map(drop),
        Err(e) if storage::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    .with_context(|| format!("while reading {}", storage.locate(storage::CONFIG)))?;
    let what = || format!("the repository config {}", storage.locate(storage::CONFIG));
    let head: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", what()))?;
    let format = head.get("format").and_then(serde_json::Value::as_u64);
    match format {
        Some(f) if f > u64::from(REPO_FORMAT) => {
            return config_error(format!(
                "the repository {} is in format {f}, newer than kcbackup {} knows \
                 (formats 1 to {REPO_FORMAT}): use a newer kcbackup",
                storage.location(),
                env!("CARGO_PKG_VERSION")
            ));
        }
        Some(_) => {}
        None => bail!("{} names no format", what()),
    }
    let config =
        serde_json::from_value(head).with_context(|| format!("while reading {}", what()))?;
    Ok(Some(config))
}

/// Writes a new `config` (write-once: if another run was first, its config
/// is the repository's).
fn create_config(storage: &dyn Storage) -> Result<RepoConfig> {
    let mut id = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .context("while drawing a repository id from /dev/urandom")?;
    let config = RepoConfig {
        format: REPO_FORMAT,
        id: hex::encode(id),
        created_by: format!("kcbackup {}", env!("CARGO_PKG_VERSION")),
        created: Utc::now(),
        chunker: ChunkerParams::default(),
    };
    let mut json = serde_json::to_vec_pretty(&config)?;
    json.push(b'\n');
    if storage.put_if_absent(storage::CONFIG, &json)? {
        return Ok(config);
    }
    read_config(storage)?.context("the repository config vanished while it was written")
}

/// Why `spec` names no set, with the sets nearest to it (ids are UTC times,
/// so lexical order is time order) and what `latest` is: one line, exit 2.
fn unknown_set(spec: &str, ids: &[&str], latest: Option<&str>, location: &str) -> String {
    let b = spec.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let looks_like_id =
        b.len() >= 16 && digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z';
    let what = if looks_like_id {
        format!("no set {spec:?} in {location}")
    } else {
        format!(
            "{spec:?} is not a set id (ids are UTC times such as 20261129T190455Z; \
             `kcbackup list` shows them)"
        )
    };
    // For a malformed id, "nearest" means the newest sets.
    let at = if looks_like_id {
        ids.partition_point(|id| *id < spec)
    } else {
        ids.len()
    };
    let before = at.checked_sub(1).and_then(|i| ids.get(i));
    let after = ids.get(at).filter(|_| looks_like_id);
    let nearest = match (before, after) {
        (Some(b), Some(a)) => format!("the nearest sets are {b} (before) and {a} (after)"),
        (Some(b), None) if looks_like_id => format!("the nearest set is {b} (before)"),
        (Some(b), None) => format!("the newest set is {b}"),
        (None, Some(a)) => format!("the nearest set is {a} (after)"),
        (None, None) => "the repository holds no set yet".to_owned(),
    };
    let latest = match latest {
        Some(id) => format!("`latest` is {id}"),
        None => "`latest` names none yet: no set is complete".to_owned(),
    };
    format!("{what}; {nearest}; {latest}")
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    const IDS: [&str; 3] = ["20261129T190455Z", "20261129T190455Z-2", "20261130T020000Z"];

    #[test]
    fn an_unknown_id_names_its_neighbours_and_latest() {
        let root = "/r";
        let msg = unknown_set("20261129T230000Z", &IDS, Some(IDS[2]), root);
        assert!(
            msg.starts_with("no set \"20261129T230000Z\" in /r;"),
            "{msg}"
        );
        assert!(
            msg.contains("20261129T190455Z-2 (before) and 20261130T020000Z (after)"),
            "{msg}"
        );
        assert!(msg.ends_with("`latest` is 20261130T020000Z"), "{msg}");
        let msg = unknown_set("20270101T000000Z", &IDS, None, root);
        assert!(
            msg.contains("nearest set is 20261130T020000Z (before)"),
            "{msg}"
        );
        assert!(msg.contains("no set is complete"), "{msg}");
    }

    #[test]
    fn a_malformed_id_is_said_to_be_one_without_panicking_on_any_text() {
        for spec in [
            "",
            "latest2",
            "yesterday",
            "2026112\u{e9}T190455Z",
            "20261129T19045\u{e9}",
        ] {
            let msg = unknown_set(spec, &IDS, Some(IDS[2]), "/r");
            assert!(msg.contains("is not a set id"), "{msg}");
            assert!(msg.contains("the newest set is 20261130T020000Z"), "{msg}");
        }
        let msg = unknown_set("x", &[], None, "/r");
        assert!(msg.contains("holds no set yet"), "{msg}");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn a_new_repository_gets_a_config_once_and_an_old_one_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let first = Repository::open_or_create(&root).unwrap();
        let config = first.config().unwrap().clone();
        assert_eq!(config.format, REPO_FORMAT);
        assert_eq!(first.format(), REPO_FORMAT);
        // Opening again reads the same config; creating again keeps it.
        assert_eq!(Repository::open(&root).unwrap().config(), Some(&config));
        let again = Repository::open_or_create(&root).unwrap();
        assert_eq!(again.config(), Some(&config));
        // Without the file: format 1, and readers still open it.
        fs::remove_file(root.join("config")).unwrap();
        let old = Repository::open(&root).unwrap();
        assert_eq!((old.config(), old.format()), (None, FORMAT_WITHOUT_CONFIG));
        assert_eq!(old.chunker(), ChunkerParams::default());
    }

    #[test]
    fn a_newer_format_is_a_config_error_and_a_garbled_config_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sets")).unwrap();
        fs::write(root.join("config"), r#"{"format": 99, "whatever": 1}"#).unwrap();
        let err = Repository::open(root).err().unwrap();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
        assert!(format!("{err:#}").contains("format 99"), "{err:#}");
        fs::write(root.join("config"), "not json").unwrap();
        let err = Repository::open(root).err().unwrap();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Failure);
        assert!(format!("{err:#}").contains("is not JSON"), "{err:#}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn records_get_names_of_their_own_and_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_shared("drill").unwrap();
        let a = repo
            .write_record(&lock, "drills", "S--T", b"{\"n\":1}")
            .unwrap();
        let b = repo
            .write_record(&lock, "drills", "S--T", b"{\"n\":2}")
            .unwrap();
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("drills/S--T.json", "drills/S--T-2.json")
        );
        let records = repo.records("drills").unwrap();
        let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["drills/S--T-2.json", "drills/S--T.json"]);
        assert_eq!(records[1].1, b"{\"n\":1}");
    }
}
