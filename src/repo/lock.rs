//! The repository lock (flock on `<repo>/lock`), as types: a function that
//! writes or deletes must be handed an [`ExclusiveLock`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

/// Held by the one run that may write (backup, prune).
pub struct ExclusiveLock {
    _lock: Flock<File>,
}

/// Held by runs that only read (verify, restore, drill, list).
pub struct SharedLock {
    _lock: Flock<File>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("while opening the lock file {}", path.display()))
}

fn holder(path: &Path) -> String {
    let mut text = String::new();
    let pid = File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()
        .and_then(|_| text.trim().parse::<u32>().ok());
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

impl ExclusiveLock {
    pub fn acquire(path: &Path) -> Result<ExclusiveLock> {
        let file = open(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The pid is for the message a second run prints, nothing more.
                lock.set_len(0)?;
                lock.rewind()?;
                writeln!(lock, "{}", std::process::id())?;
                Ok(ExclusiveLock { _lock: lock })
            }
            Err(_) => bail!("another kcbackup run holds the lock ({})", holder(path)),
        }
    }
}

impl SharedLock {
    pub fn acquire(path: &Path) -> Result<SharedLock> {
        let file = open(path)?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(lock) => Ok(SharedLock { _lock: lock }),
            Err(_) => bail!("another kcbackup run holds the lock ({})", holder(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_lock_fails_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = ExclusiveLock::acquire(&path).unwrap();
        let err = ExclusiveLock::acquire(&path).err().unwrap().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(SharedLock::acquire(&path).is_err());
        drop(first);
        let _a = SharedLock::acquire(&path).unwrap();
        let _b = SharedLock::acquire(&path).unwrap();
        assert!(ExclusiveLock::acquire(&path).is_err());
    }
}
