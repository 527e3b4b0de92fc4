//! [`Storage`] on a local filesystem: each key is a file below the
//! repository's root. New files are written under hidden names, made
//! durable, then renamed into place, so no key is seen half-written;
//! records and sets with `renameat2(RENAME_NOREPLACE)`, so they are never
//! replaced.
//!
//! Staging areas (hidden, emptied by `remove_leftovers`): `<prefix>/.tmp/`
//! for objects, `sets/.work-<id>/` for sets being written, `.<name>.tmp`
//! beside a small record on its way.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::{DRILLS, SETS, StagedFile, Storage, check_key};
use crate::metrics::tree_bytes;
use crate::repo::lock::{ExclusiveLock, SharedLock};

/// Prefix of a set's staging directory inside `sets/`; never listed as a set.
pub const WORK_PREFIX: &str = ".work-";
/// Prefix of a retired set inside `sets/` (prune is deleting it); never listed as a set.
pub const TRASH_PREFIX: &str = ".trash-";
/// The objects' staging directory inside their prefix (`objects/.tmp`).
pub const TMP_DIR: &str = ".tmp";
/// The lock file at the root.
const LOCK_FILE: &str = "lock";

pub struct LocalStorage {
    root: PathBuf,
    next_temp: AtomicU64,
    /// Directories known to exist (created or seen by this run), so a batch
    /// of objects costs no `mkdir` per object.
    known_dirs: Mutex<HashSet<PathBuf>>,
    /// Directories that received a new name since the last barrier.
    dirty_dirs: Mutex<HashSet<PathBuf>>,
}

impl LocalStorage {
    /// The storage at `root`; nothing is created or written until asked,
    /// so readers work on a read-only repository.
    pub fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
            next_temp: AtomicU64::new(0),
            known_dirs: Mutex::new(HashSet::new()),
            dirty_dirs: Mutex::new(HashSet::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The directory of a key prefix; the empty prefix is the root.
    fn area(&self, prefix: &str) -> Result<PathBuf> {
        match prefix.trim_end_matches('/') {
            "" => Ok(self.root.clone()),
            p => self.path(p),
        }
    }

    /// Creates `dir` (owner-only) if this run has not seen it; a directory
    /// created here is a new name in its parent, synced at the barrier.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let mut known = self.known_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(dir) {
            return Ok(());
        }
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("while creating {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                self.mark_dirty(parent);
            }
        }
        known.insert(dir.to_path_buf());
        Ok(())
    }

    fn mark_dirty(&self, dir: &Path) {
        let mut dirty = self.dirty_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if !dirty.contains(dir) {
            dirty.insert(dir.to_path_buf());
        }
    }

    fn temp_name(&self) -> String {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }
}

/// Moves `from` to `to` unless `to` exists (`Ok(false)`; `from` is left).
/// One `renameat2(RENAME_NOREPLACE)`; on a filesystem without it, a hard
/// link (as atomic about an existing name) and an unlink.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(Errno::EINVAL | Errno::ENOSYS) if !from.is_dir() => match fs::hard_link(from, to) {
            Ok(()) => fs::remove_file(from).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            // A directory (a set being published): the caller holds the
            // exclusive lock, so nobody creates `to` in between.
            if to.exists() {
                return Ok(false);
            }
            fs::rename(from, to).map(|()| true)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("while syncing {}", dir.display()))
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<bool> {
        let target = self.path(key)?;
        let dir = target.parent().context("a key without a directory")?;
        self.ensure_dir(dir)?;
        if target.exists() {
            return Ok(false);
        }
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", self.temp_name()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.sync_all()
            })
            .and_then(|()| rename_noreplace(&tmp, &target));
        let new = match written {
            Ok(new) => new,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("while writing {}", target.display()));
            }
        };
        if !new {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        sync_dir(dir)?;
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<Box<dyn BufRead + Send>> {
        let path = self.path(key)?;
        let file =
            File::open(&path).with_context(|| format!("while opening {}", path.display()))?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("while looking at {}", path.display())),
        }
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()> {
        fn walk(
            dir: &Path,
            key: &str,
            each: &mut dyn FnMut(&str, u64) -> Result<()>,
        ) -> Result<()> {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| format!("while listing {}", dir.display()));
                }
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("while listing {}", dir.display()))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let child = match key {
                    "" => name.to_string(),
                    key => format!("{key}/{name}"),
                };
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path(), &child, each)?;
                } else if kind.is_file() {
                    each(&child, entry.metadata()?.len())?;
                }
            }
            Ok(())
        }
        let dir = self.area(prefix)?;
        let prefix = prefix.trim_end_matches('/');
        walk(&dir, prefix, each)
    }

    fn delete(&self, _lock: &ExclusiveLock, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("while deleting {}", path.display())),
        }
    }

    fn move_aside(&self, key: &str, to: &str) -> Result<bool> {
        let from = self.path(key)?;
        if to.starts_with('/') || to.split('/').any(|c| c.is_empty() || c == "..") {
            bail!("not a repository key: {to:?}");
        }
        let to = self.root.join(to);
        if let Some(dir) = to.parent() {
            self.ensure_dir(dir)?;
        }
        rename_noreplace(&from, &to)
            .with_context(|| format!("while moving {} aside to {}", from.display(), to.display()))
    }

    fn stage(&self, prefix: &str) -> Result<StagedFile> {
        let tmp = self.area(prefix)?.join(TMP_DIR);
        let path = tmp.join(self.temp_name());
        let file = match File::create(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_dir(&tmp)?;
                File::create(&path)
            }
            other => other,
        }
        .with_context(|| format!("while creating {}", path.display()))?;
        Ok(StagedFile { path, file })
    }

    fn commit(&self, batch: Vec<(PathBuf, String)>) -> Result<Vec<bool>> {
        let Some((first, _)) = batch.first() else {
            return Ok(Vec::new());
        };
        // One syncfs for the batch instead of one fsync per file: with many
        // small attachments the cost is the flush, not the writing.
        let anchor_dir = first.parent().unwrap_or(&self.root);
        let anchor = File::open(anchor_dir)
            .with_context(|| format!("while opening {}", anchor_dir.display()))?;
        nix::unistd::syncfs(&anchor)
            .with_context(|| format!("while syncing new files in {}", self.root.display()))?;
        let mut new = Vec::with_capacity(batch.len());
        for (staged, key) in batch {
            let target = self.path(&key)?;
            let dir = target.parent().context("a key without a directory")?;
            self.ensure_dir(dir)?;
            // The staged copy was hashed by this run: it takes the place of
            // any stored copy of the same name (same content, or a damaged
            // one), so nothing is trusted from an earlier write.
            let existed = target.exists();
            fs::rename(&staged, &target)
                .with_context(|| format!("while storing {}", target.display()))?;
            self.mark_dirty(dir);
            new.push(!existed);
        }
        Ok(new)
    }

    fn barrier(&self) -> Result<()> {
        let dirty: Vec<PathBuf> = {
            let mut dirty = self.dirty_dirs.lock().unwrap_or_else(|p| p.into_inner());
            dirty.drain().collect()
        };
        // Deepest first: a new shard's own entries before its name in `objects/`.
        let mut dirty = dirty;
        dirty.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirty {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    fn begin_set(&self, id: &str) -> Result<Option<PathBuf>> {
        let sets = self.path(SETS)?;
        check_key(&format!("{SETS}/{id}"))?;
        if sets.join(id).exists() {
            return Ok(None);
        }
        let dir = sets.join(format!("{WORK_PREFIX}{id}"));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e).with_context(|| format!("while creating {}", dir.display())),
        }
    }

    fn publish_set(&self, id: &str, staging: &Path) -> Result<()> {
        let sets = self.path(SETS)?;
        let target = self.path(&format!("{SETS}/{id}"))?;
        for entry in
            fs::read_dir(staging).with_context(|| format!("while listing {}", staging.display()))?
        {
            let path = entry?.path();
            File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("while syncing {}", path.display()))?;
        }
        sync_dir(staging)?;
        // The one rename that makes the set visible, whole.
        let placed = rename_noreplace(staging, &target)
            .with_context(|| format!("while publishing set {id}"))?;
        if !placed {
            bail!("while publishing set {id}: {} exists", target.display());
        }
        sync_dir(&sets)
    }

    fn abandon_set(&self, staging: &Path) {
        let _ = fs::remove_dir_all(staging);
    }

    fn set_ids(&self) -> Result<Vec<String>> {
        let sets = self.path(SETS)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(&sets).context("while listing the repository's sets")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type()?.is_dir() {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    fn set_dir(&self, id: &str) -> Result<PathBuf> {
        self.path(&format!("{SETS}/{id}"))
    }

    fn remove_leftovers(&self, _lock: &ExclusiveLock) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let tmp = self.root.join("objects").join(TMP_DIR);
        if tmp.is_dir() {
            let mut temps = 0;
            for entry in fs::read_dir(&tmp).context("while listing unfinished objects")? {
                let path = entry?.path();
                fs::remove_file(&path)
                    .with_context(|| format!("while removing leftover {}", path.display()))?;
                temps += 1;
            }
            if temps > 0 {
                removed.push(format!("objects/{TMP_DIR}/ ({temps} unfinished objects)"));
            }
        }
        let sets = self.path(SETS)?;
        for entry in fs::read_dir(&sets).context("while listing the repository's sets")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(WORK_PREFIX) {
                fs::remove_dir_all(entry.path()).with_context(|| {
                    format!("while removing leftover {}", entry.path().display())
                })?;
                removed.push(name);
            }
        }
        // Drill reports a killed drill had not yet moved into place (drills
        // hold the shared lock, so none is being written now). The root's
        // `config` is written before any lock is taken: its rare leftover
        // is left alone rather than race a starting run.
        if let Ok(entries) = fs::read_dir(self.root.join(DRILLS)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = fs::remove_file(entry.path());
                    removed.push(format!("{DRILLS}/{name}"));
                }
            }
        }
        Ok(removed)
    }

    fn retire_set(&self, _lock: &ExclusiveLock, id: &str) -> Result<()> {
        let from = self.path(&format!("{SETS}/{id}"))?;
        let sets = self.path(SETS)?;
        let to = sets.join(format!("{TRASH_PREFIX}{id}"));
        let placed = rename_noreplace(&from, &to)
            .with_context(|| format!("while retiring set {id} (to {})", to.display()))?;
        if !placed {
            bail!("while retiring set {id}: {} exists", to.display());
        }
        sync_dir(&sets)
    }

    fn retired_sets(&self) -> Result<Vec<String>> {
        let sets = self.path(SETS)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(&sets).context("while listing the repository's sets")? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(TRASH_PREFIX) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    fn delete_retired(&self, _lock: &ExclusiveLock, id: &str) -> Result<u64> {
        check_key(id)?;
        let dir = self.path(SETS)?.join(format!("{TRASH_PREFIX}{id}"));
        let bytes = tree_bytes(&dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("while deleting {}", dir.display())),
        }
    }

    fn set_aside(&self, prefix: &str) -> Result<(u64, u64)> {
        if prefix.starts_with('/') || prefix.split('/').any(|c| c.is_empty() || c == "..") {
            bail!("not a repository key: {prefix:?}");
        }
        let Ok(entries) = fs::read_dir(self.root.join(prefix)) else {
            return Ok((0, 0));
        };
        Ok(entries
            .flatten()
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
            .fold((0, 0), |(n, b), m| (n + 1, b + m.len())))
    }

    fn lock_exclusive(&self, operation: &str, wait: Duration) -> Result<ExclusiveLock> {
        ExclusiveLock::acquire_waiting(&self.root.join(LOCK_FILE), operation, wait)
    }

    fn lock_shared(&self, operation: &str, wait: Duration) -> Result<SharedLock> {
        SharedLock::acquire_waiting(&self.root.join(LOCK_FILE), operation, wait)
    }

    fn unlock_stale(&self) -> Result<super::Unlocked> {
        Ok(super::Unlocked {
            removed: Vec::new(),
            refused: crate::repo::lock::live_holders(&self.root.join(LOCK_FILE)),
        })
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
