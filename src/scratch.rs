//! Temporary directories owned by one run (a drill's restored copy, verify's
//! decoded reference lists), named `<prefix><pid>-<start>-XXXXXX` so that the
//! next run can remove those of runs that died without cleaning up.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::Stamp;

/// A drill's scratch directory: the restored tree, config and server.
pub const DRILL_PREFIX: &str = "kcbackup-drill-";
/// verify's decoded reference lists.
pub const VERIFY_PREFIX: &str = "kcbackup-verify-";
/// Every kind, for [`remove_dead_runs`].
const PREFIXES: [&str; 2] = [DRILL_PREFIX, VERIFY_PREFIX];

/// A new directory named after this run in `parent` (default: the temp dir);
/// with `keep` it stays on every way out, an interruption included.
pub fn create(prefix: &str, parent: Option<&Path>, keep: bool) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    let name = format!("{prefix}{}-", Stamp::current());
    builder.prefix(&name).disable_cleanup(keep);
    match parent {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .with_context(|| format!("while creating a scratch directory {name}XXXXXX"))
}

/// The run a directory name says owns it; `None` for other names.
pub fn owner(name: &str, prefix: &str) -> Option<Stamp> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(Stamp { pid, start })
}

/// Removes the directories of dead runs of every kind from the temp dir
/// and from `parents` (e.g. a drill's `--scratch`); returns their paths.
pub fn remove_dead_runs(parents: &[&Path]) -> Vec<String> {
    let mut dirs = vec![std::env::temp_dir()];
    for parent in parents {
        if !dirs.iter().any(|d| d == parent) {
            dirs.push(parent.to_path_buf());
        }
    }
    let mut removed = Vec::new();
    for dir in dirs {
        for prefix in PREFIXES {
            removed.extend(remove_dead(&dir, prefix));
        }
    }
    removed
}

/// Removes `parent/<prefix>*` directories whose owner is dead. Processes
/// still using one (a drill's throwaway mariadbd and its supervisor, whose
/// command lines name it) are killed first.
fn remove_dead(parent: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = owner(&name, prefix) else {
            continue;
        };
        if owner.is_alive() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let killed = kill_users(&path);
        match fs::remove_dir_all(&path) {
            Ok(()) => removed.push(if killed > 0 {
                format!("{} (and {killed} processes using it)", path.display())
            } else {
                path.display().to_string()
            }),
            Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
        }
    }
    removed
}

/// SIGKILLs every process whose command line names `dir`, and waits (up to
/// 10 s) until they are gone; returns how many there were.
fn kill_users(dir: &Path) -> usize {
    let pids = users(dir);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|pid| {
        Stamp {
            pid: *pid,
            start: 0,
        }
        .is_alive()
    }) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

fn users(dir: &Path) -> Vec<u32> {
    let Some(needle) = dir.to_str().map(|s| format!("{s}/")) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args = String::from_utf8_lossy(&cmdline);
        let names_dir = args
            .split('\0')
            .any(|a| a.contains(&needle) || a == needle.trim_end_matches('/'));
        if names_dir {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_runs_directory_is_removed_and_a_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let mine = create(DRILL_PREFIX, Some(parent.path()), false).unwrap();
        let name = mine
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(owner(&name, DRILL_PREFIX), Some(Stamp::current()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = parent
            .path()
            .join(format!("{VERIFY_PREFIX}{dead_pid}-1-abcdef"));
        fs::create_dir_all(dead.join("sub")).unwrap();
        fs::write(dead.join("sub/f"), b"x").unwrap();
        let other = parent.path().join("kcbackup-drill-abcdef");
        fs::create_dir(&other).unwrap();
        let removed = remove_dead_runs(&[parent.path()]);
        assert_eq!(removed, vec![dead.display().to_string()]);
        assert!(!dead.exists());
        assert!(mine.path().exists(), "a live run's directory stays");
        assert!(other.exists(), "names of other forms are left alone");
    }
}
