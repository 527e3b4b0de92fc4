//! The mount points of LVM snapshots, `<mount base>/kcbackup-snap-<set id>/fs`
//! below a private 0700 directory: finding them (a crashed run's too, from
//! /proc/self/mountinfo), unmounting them and removing their directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use super::exec;

/// The mount point inside the private `kcbackup-snap-<set id>` directory.
pub(crate) const MOUNT_DIR: &str = "fs";

/// Mount points whose name or parent directory's name starts with `prefix`,
/// innermost first, from `/proc/self/mountinfo` (no tool needed).
pub(crate) fn mount_points_named(prefix: &str) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("while reading /proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| {
            let named = |p: &Path| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            };
            named(m) || m.parent().is_some_and(named)
        })
        .collect();
    found.reverse();
    found.dedup();
    Ok(found)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `dir`, retrying for a few seconds while it is busy.
pub(crate) fn unmount(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match exec::run("umount", [dir.as_os_str()]) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 20 && format!("{e:#}").contains("busy") => {
                tries += 1;
                thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e.context(format!("while unmounting {}", dir.display()))),
        }
    }
}

/// Removes `<private>/fs` and `<private>` if they exist; `remove_dir` only
/// removes empty directories, so this never deletes data.
pub(crate) fn remove_mount_dirs(private: &Path) -> Result<()> {
    for dir in [private.join(MOUNT_DIR), private.to_path_buf()] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("while removing {}", dir.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), "/tmp/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\0"), r"/x\0");
    }
}
