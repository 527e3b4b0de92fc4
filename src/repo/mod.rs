//! The backup repository: published sets under `sets/`, hidden work
//! directories for sets being written, content-addressed objects shared by
//! sets, and one lock that serialises writers.
//!
//! Layout: `<root>/lock`, `<root>/holders/`, `<root>/sets/<id>/`, `<root>/sets/.work-<id>/`,
//! `<root>/objects/`; `<root>/sets/.trash-<id>/` are sets prune is deleting.

pub mod config;
pub mod contents;
pub mod digest;
pub mod lock;
pub mod manifest;
pub mod objects;
pub mod set;
pub mod sweep;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};

use crate::error::config_error;

pub use lock::{ExclusiveLock, SharedLock};
pub use objects::ObjectStore;
pub use set::{SetInfo, WorkSet};

/// Prefix of sets still being written; never listed as sets.
pub const WORK_PREFIX: &str = ".work-";

pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// Opens the repository at `root`, creating it (owner-only) if needed.
    pub fn open_or_create(root: &Path) -> Result<Repository> {
        for dir in [root.to_path_buf(), root.join("sets"), root.join("objects")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| {
                    format!("while creating repository directory {}", dir.display())
                })?;
        }
        Ok(Repository {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing repository.
    pub fn open(root: &Path) -> Result<Repository> {
        if !root.join("sets").is_dir() {
            bail!("no kcbackup repository at {}", root.display());
        }
        Ok(Repository {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sets_dir(&self) -> PathBuf {
        self.root.join("sets")
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// The writer's lock; fails at once if another run holds it, naming
    /// it. `operation` is what others are told this run is doing.
    pub fn lock_exclusive(&self, operation: &str) -> Result<ExclusiveLock> {
        ExclusiveLock::acquire(&self.root.join("lock"), operation)
    }

    /// [`Self::lock_exclusive`], waiting up to `wait` for the other run
    /// (`--lock-wait`); zero fails at once.
    pub fn lock_exclusive_waiting(
        &self,
        operation: &str,
        wait: std::time::Duration,
    ) -> Result<ExclusiveLock> {
        ExclusiveLock::acquire_waiting(&self.root.join("lock"), operation, wait)
    }

    /// The readers' lock (verify, restore, drill); fails at once while a
    /// writer runs. Works on a read-only repository.
    pub fn lock_shared(&self, operation: &str) -> Result<SharedLock> {
        SharedLock::acquire(&self.root.join("lock"), operation)
    }

    /// [`Self::lock_shared`], waiting up to `wait` for a writer to finish.
    pub fn lock_shared_waiting(
        &self,
        operation: &str,
        wait: std::time::Duration,
    ) -> Result<SharedLock> {
        SharedLock::acquire_waiting(&self.root.join("lock"), operation, wait)
    }

    /// The content-addressed store of file data shared by all sets.
    pub fn objects(&self) -> Result<ObjectStore> {
        ObjectStore::open(&self.objects_dir())
    }

    /// Removes work directories and half-written objects left by a crashed
    /// or killed run. Needs the exclusive lock, so no live run's files are touched.
    pub fn remove_leftovers(&self, _lock: &ExclusiveLock) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let tmp = self.objects_dir().join(objects::TMP_DIR);
        if tmp.is_dir() {
            let mut temps = 0;
            for entry in fs::read_dir(&tmp).context("while listing unfinished objects")? {
                let path = entry?.path();
                fs::remove_file(&path)
                    .with_context(|| format!("while removing leftover {}", path.display()))?;
                temps += 1;
            }
            if temps > 0 {
                removed.push(format!(
                    "objects/{}/ ({temps} unfinished objects)",
                    objects::TMP_DIR
                ));
            }
        }
        for entry in fs::read_dir(self.sets_dir()).context("while listing the repository's sets")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(WORK_PREFIX) {
                fs::remove_dir_all(entry.path()).with_context(|| {
                    format!("while removing leftover {}", entry.path().display())
                })?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Starts a new set in a hidden work directory.
    pub fn begin_set(&self, _lock: &ExclusiveLock, started: DateTime<Utc>) -> Result<WorkSet> {
        WorkSet::create(&self.sets_dir(), started)
    }

    /// Every published set, oldest first.
    pub fn sets(&self) -> Result<Vec<SetInfo>> {
        let mut sets = Vec::new();
        for entry in fs::read_dir(self.sets_dir()).context("while listing the repository's sets")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            sets.push(SetInfo::load(&entry.path(), &name));
        }
        sets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(sets)
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
        let unknown = unknown_set(spec, &ids, latest.as_deref(), &self.root);
        match sets.into_iter().find(|s| s.id == spec) {
            Some(set) => Ok(set),
            None => config_error(unknown),
        }
    }
}

/// Why `spec` names no set, with the sets nearest to it (ids are UTC times,
/// so lexical order is time order) and what `latest` is: one line, exit 2.
fn unknown_set(spec: &str, ids: &[&str], latest: Option<&str>, root: &Path) -> String {
    let b = spec.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let looks_like_id =
        b.len() >= 16 && digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z';
    let what = if looks_like_id {
        format!("no set {spec:?} in {}", root.display())
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
        let root = Path::new("/r");
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
            let msg = unknown_set(spec, &IDS, Some(IDS[2]), Path::new("/r"));
            assert!(msg.contains("is not a set id"), "{msg}");
            assert!(msg.contains("the newest set is 20261130T020000Z"), "{msg}");
        }
        let msg = unknown_set("x", &[], None, Path::new("/r"));
        assert!(msg.contains("holds no set yet"), "{msg}");
    }
}
