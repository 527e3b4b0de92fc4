//! The backup repository: published sets under `sets/`, hidden work
//! directories for sets being written, content-addressed objects shared by
//! sets, and one lock that serialises writers.
//!
//! Layout: `<root>/lock`, `<root>/holders/`, `<root>/sets/<id>/`, `<root>/sets/.work-<id>/`,
//! `<root>/objects/`.

pub mod digest;
pub mod lock;
pub mod manifest;
pub mod objects;
pub mod set;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};

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

    /// The readers' lock (verify, restore, drill); fails at once while a
    /// writer runs. Works on a read-only repository.
    pub fn lock_shared(&self, operation: &str) -> Result<SharedLock> {
        SharedLock::acquire(&self.root.join("lock"), operation)
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
        sets.into_iter()
            .find(|s| s.id == spec)
            .with_context(|| format!("no set {spec:?} in {}", self.root.display()))
    }
}
