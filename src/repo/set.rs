//! One backup set: written in a hidden work directory, made visible by a
//! single rename after the manifest (written last) and every file are
//! fsynced. A run that dies leaves only a hidden directory.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::digest::{file_digest, sha256_hex};
use super::manifest::{FileEntry, MANIFEST, MANIFEST_SUM, Manifest, SetStatus};
use super::storage::{SETS, Storage};

/// A set being written, in a private local directory until published.
pub struct WorkSet {
    id: String,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    published: bool,
}

impl WorkSet {
    /// Picks an id from the start time (`20261129T190455Z`, with `-2`, `-3`
    /// ... when that second is taken) and creates the staging directory.
    pub(crate) fn create(storage: Arc<dyn Storage>, started: DateTime<Utc>) -> Result<WorkSet> {
        let base = started.format("%Y%m%dT%H%M%SZ").to_string();
        let mut id = base.clone();
        let mut n = 1;
        let dir = loop {
            if let Some(dir) = storage.begin_set(&id)? {
                break dir;
            }
            n += 1;
            id = format!("{base}-{n}");
        };
        Ok(WorkSet {
            id,
            dir,
            storage,
            published: false,
        })
    }

    /// The staging directory of set `id` exactly (a copy from another
    /// repository keeps the id); `None` when `id` is taken.
    pub(crate) fn create_named(storage: Arc<dyn Storage>, id: &str) -> Result<Option<WorkSet>> {
        Ok(storage.begin_set(id)?.map(|dir| WorkSet {
            id: id.to_owned(),
            dir,
            storage,
            published: false,
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Publishes the files already in the staging directory as they are,
    /// manifest included (a set copied from another repository, checked
    /// against its manifest on the way): every file stored, the manifest last.
    pub fn publish_as_is(mut self) -> Result<()> {
        self.storage.publish_set(&self.id, &self.dir)?;
        self.published = true;
        Ok(())
    }

    /// The local directory the set is written in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file of the set is written while the set is in progress.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes the manifest (whose `files` the caller filled with
    /// [`Self::list_files`], so it could check the set first) and its
    /// checksum, then has the storage publish the set: every file durable,
    /// the manifest last, visible at once. Returns the set's local directory.
    pub fn publish(mut self, manifest: &Manifest) -> Result<PathBuf> {
        let json = serde_json::to_vec_pretty(manifest)?;
        fs::write(self.path(MANIFEST), &json).context("while writing the manifest")?;
        fs::write(
            self.path(MANIFEST_SUM),
            format!("{}  {MANIFEST}\n", sha256_hex(&json)),
        )
        .context("while writing the manifest checksum")?;
        self.storage.publish_set(&self.id, &self.dir)?;
        self.published = true;
        self.storage.set_dir(&self.id)
    }

    /// Every file of the set so far but the manifest, with size and SHA-256.
    pub fn list_files(&self) -> Result<Vec<FileEntry>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MANIFEST || name == MANIFEST_SUM {
                continue;
            }
            let (bytes, sha256) = file_digest(&entry.path())?;
            files.push(FileEntry {
                name,
                bytes,
                sha256,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }
}

impl Drop for WorkSet {
    /// A set that was not published is removed at once; if the process dies
    /// instead, the next run's `remove_leftovers` does it.
    fn drop(&mut self) {
        if !self.published {
            self.storage.abandon_set(&self.dir);
        }
    }
}

/// A published set as `list` sees it. Its files are reached through
/// [`SetInfo::open`] (a reader) or [`SetInfo::local_path`] (a path, for
/// consumers that need one), never by joining paths in the repository.
pub struct SetInfo {
    pub id: String,
    /// The local directory of the set's files: on local storage the set
    /// itself, on remote storage a local cached copy. Prefer the methods.
    pub dir: PathBuf,
    /// The manifest, or why it could not be read or did not match its checksum.
    pub manifest: std::result::Result<Manifest, String>,
    storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for SetInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetInfo")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("manifest", &self.manifest)
            .finish()
    }
}

impl SetInfo {
    pub(crate) fn load(storage: Arc<dyn Storage>, id: &str) -> Result<SetInfo> {
        let dir = storage.set_dir(id)?;
        Ok(SetInfo {
            id: id.to_string(),
            manifest: Manifest::load(&dir).map_err(|e| format!("{e:#}")),
            dir,
            storage,
        })
    }

    /// Reads the set's file `name` from its start.
    pub fn open(&self, name: &str) -> Result<Box<dyn BufRead + Send>> {
        self.storage
            .get(&format!("{SETS}/{}/{name}", self.id))
            .with_context(|| format!("while reading {name} of set {}", self.id))
    }

    /// The stored size of the set's file `name`, if it has one.
    pub fn file_size(&self, name: &str) -> Result<Option<u64>> {
        self.storage.stat(&format!("{SETS}/{}/{name}", self.id))
    }

    /// The names of every file stored in the set, the manifest's included.
    pub fn file_names(&self) -> Result<Vec<String>> {
        let prefix = format!("{SETS}/{}", self.id);
        let mut names = Vec::new();
        self.storage.list(&prefix, &mut |key, _| {
            if let Some(name) = key.strip_prefix(&prefix).and_then(|k| k.strip_prefix('/')) {
                names.push(name.to_string());
            }
            Ok(())
        })?;
        names.sort();
        Ok(names)
    }

    /// A local directory holding the set's files, for consumers that need
    /// a path (the dump loader, index readers). On local storage the set
    /// itself; for a remote store a local cached copy.
    /// A failure to fetch is logged: the reader of a missing file then
    /// fails with its own message.
    pub fn local_dir(&self) -> &Path {
        self.fetch();
        &self.dir
    }

    /// A local path of the set's file `name` (see [`Self::local_dir`]).
    pub fn local_path(&self, name: &str) -> PathBuf {
        self.fetch();
        self.dir.join(name)
    }

    fn fetch(&self) {
        if let Err(e) = self.storage.fetch_set(&self.id) {
            tracing::warn!("while fetching the files of set {}: {e:#}", self.id);
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(&self.manifest, Ok(m) if m.status == SetStatus::Complete)
    }

    /// `complete`, `incomplete`, or `damaged` when the manifest is unreadable or tampered.
    pub fn status(&self) -> &'static str {
        match &self.manifest {
            Ok(m) => m.status.as_str(),
            Err(_) => "damaged",
        }
    }
}
