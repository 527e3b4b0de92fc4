//! btrfs: a read-only snapshot of the subvolume that holds the attachment
//! store, created next to it as `.kcbackup-snap-<set id>` and deleted after
//! the copy. Needs no mount: the snapshot is a directory of the same filesystem.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::detect::{Volume, same_dev};
use super::{PREFIX, exec};

/// Inode number of every btrfs subvolume's root directory.
const SUBVOL_ROOT_INO: u64 = 256;

/// The subvolume to snapshot and the directory the snapshot goes into.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub subvol: PathBuf,
    /// The subvolume's parent directory when it is on the same mount (the
    /// usual case), else the subvolume itself: a snapshot must stay inside the
    /// same filesystem, and a subvolume mounted on its own has no parent there.
    pub snap_dir: PathBuf,
}

/// Finds the subvolume holding `path` (canonical): the topmost directory
/// above it that is still on the same device, i.e. in the same subvolume.
pub(crate) fn target_for(path: &Path, vol: &Volume) -> Result<Target> {
    let dev = fs::metadata(path)
        .with_context(|| format!("while reading {}", path.display()))?
        .dev();
    let mut subvol = path.to_path_buf();
    while subvol != vol.target {
        let Some(parent) = subvol.parent() else { break };
        match fs::metadata(parent) {
            Ok(m) if m.dev() == dev => subvol = parent.to_path_buf(),
            _ => break,
        }
    }
    let ino = fs::metadata(&subvol)
        .with_context(|| format!("while reading {}", subvol.display()))?
        .ino();
    if ino != SUBVOL_ROOT_INO {
        // E.g. a bind mount of a directory inside a subvolume.
        bail!(
            "cannot snapshot {}: the root of its btrfs subvolume is not visible \
             (the nearest directory of the subvolume is {}); mount the subvolume \
             itself or set [snapshot] method = none",
            path.display(),
            subvol.display()
        );
    }
    let snap_dir = match subvol.parent() {
        Some(parent) if subvol != vol.target => parent.to_path_buf(),
        _ => subvol.clone(),
    };
    Ok(Target { subvol, snap_dir })
}

/// Where `p` is inside the snapshot, if it is in the snapshotted subvolume
/// (a nested subvolume would show up empty in the snapshot: not covered).
pub(crate) fn rel_in_subvolume(t: &Target, source: &Path, p: &Path) -> Result<Option<PathBuf>> {
    if !p.starts_with(&t.subvol) || !same_dev(source, p)? {
        return Ok(None);
    }
    Ok(p.strip_prefix(&t.subvol).ok().map(Path::to_path_buf))
}

/// Creates the read-only snapshot `<snap_dir>/.<name>` and returns its path.
pub(crate) fn create(t: &Target, name: &str) -> Result<PathBuf> {
    let path = t.snap_dir.join(format!(".{name}"));
    exec::run(
        "btrfs",
        [
            "subvolume".as_ref(),
            "snapshot".as_ref(),
            "-r".as_ref(),
            t.subvol.as_os_str(),
            path.as_os_str(),
        ],
    )
    .with_context(|| format!("while creating the btrfs snapshot {}", path.display()))?;
    Ok(path)
}

/// Deletes a snapshot subvolume.
pub(crate) fn delete(path: &Path) -> Result<()> {
    exec::run(
        "btrfs",
        ["subvolume".as_ref(), "delete".as_ref(), path.as_os_str()],
    )
    .with_context(|| format!("while deleting the btrfs snapshot {}", path.display()))?;
    Ok(())
}

/// Snapshots a crashed earlier run left in the snapshot directory: only
/// subvolumes whose name carries our prefix.
pub(crate) fn stale(t: &Target) -> Result<Vec<PathBuf>> {
    let hidden = format!(".{PREFIX}");
    let mut found = Vec::new();
    let entries = fs::read_dir(&t.snap_dir)
        .with_context(|| format!("while listing {}", t.snap_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("while listing {}", t.snap_dir.display()))?;
        if !entry.file_name().to_string_lossy().starts_with(&hidden) {
            continue;
        }
        let path = entry.path();
        let is_subvol = fs::symlink_metadata(&path)
            .map(|m| m.is_dir() && m.ino() == SUBVOL_ROOT_INO)
            .unwrap_or(false);
        if is_subvol {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
