//! The repository lock (flock on `<repo>/lock`), as types: a function that
//! writes or deletes must be handed an [`ExclusiveLock`]. Each holder also
//! leaves a record in `<repo>/holders/`, so a refused run can say who holds it.
//!
//! A record is written only AFTER the flock is held, and removed BEFORE it
//! is released, so every live record names a real holder; a run killed
//! with its record in place is recognised by its dead pid (and start time)
//! and ignored. A refused run that finds no record (a holder that has
//! just taken the lock, or is just releasing it) tries again for a moment. On a read-only repository readers lock
//! what they can and record nothing: no writer can run there anyway.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, Local, Utc};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::process::Stamp;

/// Folder of the holder records, next to the lock file.
pub const HOLDERS_DIR: &str = "holders";
/// How long a refused run waits for the holder's record to appear.
const RECORD_GRACE: Duration = Duration::from_secs(2);
/// How often a run waiting for the lock (`--lock-wait`) tries again.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Held by the one run that may write (backup, prune).
pub struct ExclusiveLock {
    _held: Held,
}

/// Held by runs that only read (verify, restore, drill). Without a lock
/// file on a read-only repository it holds nothing: no writer can start.
pub struct SharedLock {
    held: Held,
}

/// A lock kept on remote storage (an object refreshed while the run
/// lasts; see `storage::s3`), released when dropped.
pub trait RemoteHold: Send + Sync {
    /// Says what this run is doing, for others' refusals.
    fn describe(&self, operation: &str);
}

/// What a lock holds: the local flock with its holder record (the record
/// is declared first, so it goes before the flock), or a remote lock.
enum Held {
    Local(Record, #[allow(dead_code)] Option<Flock<File>>),
    Remote(Box<dyn RemoteHold>),
}

impl ExclusiveLock {
    /// The token for a lock the storage holds remotely.
    pub(crate) fn remote(hold: Box<dyn RemoteHold>) -> ExclusiveLock {
        ExclusiveLock {
            _held: Held::Remote(hold),
        }
    }
}

impl SharedLock {
    /// The token for a lock the storage holds remotely.
    pub(crate) fn remote(hold: Box<dyn RemoteHold>) -> SharedLock {
        SharedLock {
            held: Held::Remote(hold),
        }
    }
}

/// What a holder record says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    start: u64,
    operation: String,
    since: DateTime<Utc>,
}

/// This run's record; removed on drop (declared before the flock in the
/// lock types, so it goes first).
struct Record {
    path: Option<PathBuf>,
    since: DateTime<Utc>,
}

impl Record {
    fn write(lock_path: &Path, operation: &str) -> Record {
        let since = Utc::now();
        let me = Stamp::current();
        let dir = holders_dir(lock_path);
        let holder = Holder {
            pid: me.pid,
            start: me.start,
            operation: operation.to_string(),
            since,
        };
        let path = dir.join(format!("{}.json", me.pid));
        let tmp = dir.join(format!(".{}.json.tmp", me.pid));
        // Best effort: a reader on a read-only repository cannot record,
        // and a missing record only makes a refusal less precise.
        let written = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&tmp, serde_json::to_vec(&holder).unwrap_or_default()))
            .and_then(|()| fs::rename(&tmp, &path));
        match written {
            Ok(()) => Record {
                path: Some(path),
                since,
            },
            Err(e) => {
                tracing::debug!("no lock holder record in {}: {e}", dir.display());
                let _ = fs::remove_file(&tmp);
                Record { path: None, since }
            }
        }
    }

    /// Replaces the operation, e.g. once the set is known.
    fn describe(&mut self, operation: &str) {
        let Some(path) = &self.path else { return };
        let me = Stamp::current();
        let holder = Holder {
            pid: me.pid,
            start: me.start,
            operation: operation.to_string(),
            since: self.since,
        };
        let tmp = path.with_file_name(format!(".{}.json.tmp", me.pid));
        let _ = fs::write(&tmp, serde_json::to_vec(&holder).unwrap_or_default())
            .and_then(|()| fs::rename(&tmp, path));
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

fn holders_dir(lock_path: &Path) -> PathBuf {
    lock_path.with_file_name(HOLDERS_DIR)
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn is_read_only(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EROFS)
}

/// The live holders other than this run, as `verify of set X, pid N,
/// since HH:MM:SS`; records of dead runs are removed on the way.
pub(crate) fn live_holders(lock_path: &Path) -> Vec<String> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir(holders_dir(lock_path)) else {
        return Vec::new();
    };
    let mut found: Vec<Holder> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Some(holder) = fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
        else {
            continue;
        };
        let stamp = Stamp {
            pid: holder.pid,
            start: holder.start,
        };
        if !stamp.is_alive() {
            let _ = fs::remove_file(entry.path());
        } else if holder.pid != me {
            found.push(holder);
        }
    }
    found.sort_by_key(|h| h.since);
    found
        .iter()
        .map(|h| {
            format!(
                "{}, pid {}, since {}",
                h.operation,
                h.pid,
                h.since.with_timezone(&Local).format("%H:%M:%S")
            )
        })
        .collect()
}

/// Takes the flock, waiting up to `wait` for the holders to finish (polled
/// every [`WAIT_POLL`], never spinning), or fails naming every live holder.
/// While no holder has a record (one has only just taken the lock, or is
/// releasing it), it tries again for a moment rather than blame nobody.
fn lock_or_name(path: &Path, file: File, arg: FlockArg, wait: Duration) -> Result<Flock<File>> {
    let started = Instant::now();
    let mut deadline = started + RECORD_GRACE;
    let mut file = file;
    let mut said = false;
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(lock),
            Err((_, errno)) if errno != Errno::EWOULDBLOCK => {
                return Err(anyhow!(
                    "while locking {}: {}",
                    path.display(),
                    errno.desc()
                ));
            }
            Err((back, _)) => file = back,
        }
        let waited = started.elapsed();
        if waited < wait {
            if !said {
                let holders = live_holders(path);
                tracing::warn!(
                    "waiting up to {}s for the repository lock (held by {})",
                    wait.as_secs(),
                    if holders.is_empty() {
                        "a run that left no record".to_owned()
                    } else {
                        holders.join("; ")
                    }
                );
                said = true;
            }
            crate::signals::check()?;
            std::thread::sleep(WAIT_POLL.min(wait - waited));
            // The record grace starts only once the wait is over.
            deadline = Instant::now() + RECORD_GRACE;
            continue;
        }
        let holders = live_holders(path);
        if !holders.is_empty() {
            let waited = if wait.is_zero() {
                String::new()
            } else {
                format!(" (waited {}s)", wait.as_secs())
            };
            return Err(anyhow!(
                "another kcbackup run holds the lock{waited}: {}",
                holders.join("; ")
            ));
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "another kcbackup run holds the lock {} (it left no record of itself)",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl ExclusiveLock {
    /// `operation` names the run for others' refusals (`backup`).
    pub fn acquire(path: &Path, operation: &str) -> Result<ExclusiveLock> {
        Self::acquire_waiting(path, operation, Duration::ZERO)
    }

    /// [`Self::acquire`], waiting up to `wait` for other runs (backup or
    /// prune with `--lock-wait`) before failing with the holder's name.
    pub fn acquire_waiting(path: &Path, operation: &str, wait: Duration) -> Result<ExclusiveLock> {
        let file = open_rw(path).map_err(|e| {
            if is_read_only(&e) {
                anyhow!(
                    "the repository {} is on a read-only file system: {operation} needs to write there",
                    path.parent().unwrap_or(path).display()
                )
            } else {
                anyhow!("while opening the lock file {}: {e}", path.display())
            }
        })?;
        let lock = lock_or_name(path, file, FlockArg::LockExclusiveNonblock, wait)?;
        let record = Record::write(path, operation);
        // Clears the records of dead runs on the way.
        live_holders(path);
        Ok(ExclusiveLock {
            _held: Held::Local(record, Some(lock)),
        })
    }
}

impl SharedLock {
    /// `operation` names the run for others' refusals (`verify`).
    pub fn acquire(path: &Path, operation: &str) -> Result<SharedLock> {
        Self::acquire_waiting(path, operation, Duration::ZERO)
    }

    /// [`Self::acquire`], waiting up to `wait` for a writer to finish
    /// (`prune --dry-run --lock-wait`).
    pub fn acquire_waiting(path: &Path, operation: &str, wait: Duration) -> Result<SharedLock> {
        let file = match open_rw(path) {
            Ok(file) => file,
            Err(e) if is_read_only(&e) || e.kind() == io::ErrorKind::PermissionDenied => {
                // A read-only repository: lock the file if there is one.
                match File::open(path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let record = Record {
                            path: None,
                            since: Utc::now(),
                        };
                        return Ok(SharedLock {
                            held: Held::Local(record, None),
                        });
                    }
                    Err(e) => {
                        return Err(anyhow!(
                            "while opening the lock file {}: {e}",
                            path.display()
                        ));
                    }
                }
            }
            Err(e) => {
                return Err(anyhow!(
                    "while opening the lock file {}: {e}",
                    path.display()
                ));
            }
        };
        let lock = lock_or_name(path, file, FlockArg::LockSharedNonblock, wait)?;
        Ok(SharedLock {
            held: Held::Local(Record::write(path, operation), Some(lock)),
        })
    }

    /// Says what this run is doing, for others' refusals (`verify of set X`).
    pub fn describe(&mut self, operation: &str) {
        match &mut self.held {
            Held::Local(record, _) => record.describe(operation),
            Held::Remote(hold) => hold.describe(operation),
        }
    }

    /// Whether this run could leave a record (false on a read-only repository).
    pub fn recorded(&self) -> bool {
        match &self.held {
            Held::Local(record, _) => record.path.is_some(),
            Held::Remote(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_holder_and_what_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = ExclusiveLock::acquire(&path, "backup").unwrap();
        // Records name this process, which `live_holders` skips as "self":
        // look at the record directly.
        let record = dir
            .path()
            .join(HOLDERS_DIR)
            .join(format!("{}.json", std::process::id()));
        let holder: Holder = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
        assert_eq!(holder.operation, "backup");
        assert_eq!(holder.pid, std::process::id());
        drop(first);
        assert!(!record.exists(), "the record goes with the lock");

        let mut shared = SharedLock::acquire(&path, "verify").unwrap();
        shared.describe("verify of set X");
        let holder: Holder = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
        assert_eq!(holder.operation, "verify of set X");
        drop(shared);
        let _a = SharedLock::acquire(&path, "verify").unwrap();
        let _b = SharedLock::acquire(&path, "drill").unwrap();
    }

    #[test]
    fn a_child_holder_is_named_and_a_dead_ones_record_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holders = dir.path().join(HOLDERS_DIR);
        fs::create_dir(&holders).unwrap();
        // A record left by a killed run: its pid is gone.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let stale = Holder {
            pid: dead_pid,
            start: 1,
            operation: "backup".into(),
            since: Utc::now(),
        };
        let stale_path = holders.join(format!("{dead_pid}.json"));
        fs::write(&stale_path, serde_json::to_vec(&stale).unwrap()).unwrap();
        // A live holder: a child process, recorded as holding a verify.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stamp = Stamp {
            pid: child.id(),
            start: 0,
        };
        let live = Holder {
            pid: stamp.pid,
            start: 0,
            operation: "verify of set S".into(),
            since: Utc::now(),
        };
        fs::write(
            holders.join(format!("{}.json", stamp.pid)),
            serde_json::to_vec(&live).unwrap(),
        )
        .unwrap();
        let found = live_holders(&path);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(&format!("verify of set S, pid {}, since ", stamp.pid)),
            "{found:?}"
        );
        assert!(!stale_path.exists(), "a dead run's record is removed");
    }

    #[test]
    fn a_holder_releasing_without_a_record_does_not_refuse_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = Flock::lock(open_rw(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let lock = ExclusiveLock::acquire(&path, "backup");
        release.join().unwrap();
        assert!(lock.is_ok(), "{:?}", lock.err());
    }

    #[test]
    fn a_waiting_acquire_gets_the_lock_once_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = ExclusiveLock::acquire(&path, "backup").unwrap();
        // Without waiting: refused at once.
        assert!(ExclusiveLock::acquire_waiting(&path, "prune", Duration::ZERO).is_err());
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(held);
        });
        let lock = ExclusiveLock::acquire_waiting(&path, "prune", Duration::from_secs(60));
        release.join().unwrap();
        assert!(lock.is_ok(), "{:?}", lock.err());
    }

    #[test]
    fn a_refusal_without_any_record_says_so_after_a_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = Flock::lock(open_rw(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        let err = SharedLock::acquire(&path, "verify")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("left no record"), "{err}");
    }
}
