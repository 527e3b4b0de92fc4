//! The storage interface: every read and write of a repository goes through
//! [`Storage`], so commands never build paths inside it, and the local
//! filesystem (today) and object storage (issue 14) are interchangeable.
//!
//! Keys are relative, `/`-separated names: `config`, `objects/ab/<sha>.zst`,
//! `sets/<id>/manifest.json`, `drills/<set>--<time>.json`. A name component
//! starting with `.` belongs to the storage itself (staging, things set
//! aside) and is never a key.
//!
//! The contract every implementation keeps:
//! - Write-once: a record (`put_if_absent`) is never replaced. Objects
//!   (`commit`) have content-addressed keys, so a key that exists holds the
//!   same bytes by construction; the staged copy, hashed by this run, takes
//!   its place (which heals a stored copy damaged unnoticed) and is reported
//!   as not new. Object storage may keep the stored copy instead when its
//!   size matches.
//! - Durable before visible: a key is listed, stat'ed or read only once its
//!   bytes are durable; `commit` makes a batch durable at once (local: one
//!   `syncfs`), `barrier` makes the batch's names durable before a manifest
//!   may name them.
//! - A set is published at once (local: one rename of a hidden directory)
//!   or, where that cannot be, with its manifest last, so a set is never
//!   seen complete before every file it names is stored.
//! - Only a holder of the exclusive lock deletes (`delete` takes it); any
//!   run may set a corrupt object aside (`move_aside`), which never
//!   replaces what is there.

/// The contract checks, public so that the object-storage tests (in
/// `tests/`, beside their server) run the same checks as the unit tests.
#[doc(hidden)]
pub mod contract;
pub mod encrypted;
pub mod local;
pub mod s3;
mod s3_lock;

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::lock::{ExclusiveLock, SharedLock};

pub use local::LocalStorage;

/// Where sets live, as a key prefix.
pub const SETS: &str = "sets";
/// Where drill reports live, as a key prefix.
pub const DRILLS: &str = "drills";
/// Where upgrade censuses live (`upgrade prepare`), as a key prefix.
pub const CENSUSES: &str = "censuses";
/// The repository's config, as a key.
pub const CONFIG: &str = "config";

/// A local file to write an object into before [`Storage::commit`] stores it.
pub struct StagedFile {
    /// Where the file is: handed back to `commit` (or removed by the caller).
    pub path: PathBuf,
    pub file: File,
}

/// All repository I/O. Object-safe: the repository holds an `Arc<dyn Storage>`.
pub trait Storage: Send + Sync {
    /// Where the repository is, for messages (a path, later a URL).
    fn location(&self) -> String;

    /// Where `key` is, for messages (a real path on local storage).
    fn locate(&self, key: &str) -> String;

    /// Stores a small record (config, drill report) under `key` unless the
    /// key exists: durable when it returns `true`, untouched when `false`.
    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<bool>;

    /// Reads a stored key from its start. An error whose root cause is an
    /// `io::Error` of kind `NotFound` means there is no such key.
    fn get(&self, key: &str) -> Result<Box<dyn BufRead + Send>>;

    /// The stored size of `key`, or `None` when there is no such key.
    fn stat(&self, key: &str) -> Result<Option<u64>>;

    /// Every key below `prefix` (a key prefix ending at a `/` boundary,
    /// e.g. `objects` or `drills`) with its stored size, in no set order,
    /// one at a time so memory stays flat on a large store.
    fn list(&self, prefix: &str, each: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()>;

    /// Removes `key`; `false` when it was not there.
    fn delete(&self, _lock: &ExclusiveLock, key: &str) -> Result<bool>;

    /// Moves `key` to `to` (a name under a hidden prefix such as
    /// `objects/.corrupt/...`) unless `to` exists: `Ok(false)` then. An
    /// error of kind `NotFound` when `key` is gone (another run was first).
    fn move_aside(&self, key: &str, to: &str) -> Result<bool>;

    /// A new local file for an object on its way into the store below
    /// `prefix` (e.g. `objects`).
    fn stage(&self, prefix: &str) -> Result<StagedFile>;

    /// Makes staged files durable (the whole batch at once) and stores each
    /// under its key (see the contract above for a key that exists).
    /// Returns, per file, whether the key is new.
    fn commit(&self, batch: Vec<(PathBuf, String)>) -> Result<Vec<bool>>;

    /// The barrier before a manifest may name committed keys: their names
    /// are durable when it returns.
    fn barrier(&self) -> Result<()>;

    /// A fresh private local directory where set `id`'s files are written
    /// before [`Self::publish_set`]; `None` when `id` is taken (published,
    /// or being written by another run).
    fn begin_set(&self, id: &str) -> Result<Option<PathBuf>>;

    /// Makes every file in `staging` visible as `sets/<id>/<name>` at once:
    /// on local storage one rename after everything is fsynced; elsewhere
    /// the manifest (`manifest.json.sha256`, then `manifest.json`) goes last,
    /// after every other file is confirmed stored.
    fn publish_set(&self, id: &str, staging: &Path) -> Result<()>;

    /// Removes a set's staging directory that will not be published.
    fn abandon_set(&self, staging: &Path);

    /// Whether this run can read what is stored: an encrypted repository
    /// without its identity cannot (one line, exit 2). Readers that take no
    /// shared lock (`list`) ask first.
    fn check_readable(&self) -> Result<()> {
        Ok(())
    }

    /// The ids of every published set (complete, incomplete or damaged), unsorted.
    fn set_ids(&self) -> Result<Vec<String>>;

    /// A local directory holding set `id`'s files, for readers that need a
    /// path (the dump loader, the index reader). On local storage it is the
    /// set itself; on remote storage a local cached copy.
    fn set_dir(&self, id: &str) -> Result<PathBuf>;

    /// Brings every file of set `id` into [`Self::set_dir`] (remote storage
    /// fetches what its local copy lacks; `set_dir` itself may hold only
    /// the manifest). Nothing to do on local storage.
    fn fetch_set(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    /// Takes published set `id` out of the sets at once, durably (a crash
    /// after it never brings the set back), as a retired set that
    /// [`Self::delete_retired`] removes; prune does this before it deletes
    /// any object the set needed.
    fn retire_set(&self, lock: &ExclusiveLock, id: &str) -> Result<()>;

    /// Ids of retired sets not yet deleted (a prune was killed), unsorted.
    fn retired_sets(&self) -> Result<Vec<String>>;

    /// Deletes what is left of retired set `id`; returns the bytes freed
    /// (0 when it is already gone: safe to repeat).
    fn delete_retired(&self, lock: &ExclusiveLock, id: &str) -> Result<u64>;

    /// How many files [`Self::move_aside`] put below `prefix` (such as
    /// `objects/.corrupt`), and their bytes.
    fn set_aside(&self, prefix: &str) -> Result<(u64, u64)>;

    /// Removes what crashed or killed runs left in the staging areas
    /// (unfinished objects, unpublished sets); says what went.
    fn remove_leftovers(&self, lock: &ExclusiveLock) -> Result<Vec<String>>;

    /// The writers' lock (backup, prune), waiting up to `wait` for another
    /// holder (`--lock-wait`); then, or at once with zero, fails naming it.
    fn lock_exclusive(&self, operation: &str, wait: Duration) -> Result<ExclusiveLock>;

    /// The readers' lock (verify, restore, drill, list's readers), waiting
    /// up to `wait` for a writer.
    fn lock_shared(&self, operation: &str, wait: Duration) -> Result<SharedLock>;

    /// `kcbackup unlock`: removes locks left by runs that are gone (stale,
    /// or their process gone from this host) and names those that stay.
    /// A local lock dies with its holder: only live holders are named.
    fn unlock_stale(&self) -> Result<Unlocked>;
}

/// What [`Storage::unlock_stale`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Unlocked {
    /// Locks removed (whose holder is gone), described.
    pub removed: Vec<String>,
    /// Locks still held by live (or not provably dead) runs: kept.
    pub refused: Vec<String>,
}

/// The storage of the repository `spec` names; nothing is written yet.
pub fn open(spec: &crate::settings::RepoSpec) -> Result<std::sync::Arc<dyn Storage>> {
    match spec {
        crate::settings::RepoSpec::Local(root) => Ok(std::sync::Arc::new(LocalStorage::new(root))),
        crate::settings::RepoSpec::S3(repo) => Ok(std::sync::Arc::new(s3::S3Storage::new(repo)?)),
        crate::settings::RepoSpec::Encrypted(inner, keys) => Ok(std::sync::Arc::new(
            encrypted::EncryptedStorage::new(open(inner)?, keys)?,
        )),
    }
}

/// Refuses keys that could leave the repository or name storage internals.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && c != "..");
    if !ok {
        bail!("not a repository key: {key:?}");
    }
    Ok(())
}

/// Whether `err` says a key does not exist.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_and_off_storage_internals() {
        for good in [
            "config",
            "objects/ab/abc.zst",
            "sets/20261129T190455Z/manifest.json",
        ] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "sets/../x",
            "objects/.tmp/1",
            "a//b",
            "a/",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
