//! Path checks for everything a set asks to write: a tampered set must not
//! write outside the restore target (absolute paths, `..`, writing through
//! symlinks). Symlinks themselves may point anywhere: they are created as
//! links, after every file, and nothing is ever written below one.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::attachments::IndexEntry;

/// Joins a set's relative path onto `root`, refusing anything that could
/// leave it. Existing components below `root` must be real directories, not
/// symlinks, so a planted link cannot redirect the write.
pub fn safe_join(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    let mut parts = 0;
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                out.push(part);
                parts += 1;
            }
            Component::CurDir => {}
            _ => bail!(
                "refusing path {:?} from the set: it is absolute or climbs out with `..`",
                rel
            ),
        }
    }
    if parts == 0 {
        bail!("refusing an empty path from the set");
    }
    let mut cursor = root.to_path_buf();
    for c in rel.parent().unwrap_or(Path::new("")).components() {
        cursor.push(c);
        match fs::symlink_metadata(&cursor) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "refusing to write through the symlink {} inside the restore target",
                cursor.display()
            ),
            Ok(m) if !m.is_dir() => bail!("{} is not a directory", cursor.display()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The lexical part of [`safe_join`], for checking a whole set before
/// anything is written: relative, no `..`, not empty.
pub fn check_rel(rel: &str) -> Result<()> {
    let path = Path::new(rel);
    if rel.is_empty() || path.components().all(|c| c == Component::CurDir) {
        bail!("refusing an empty path from the set");
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("refusing path {rel:?} from the set: it is absolute or climbs out with `..`");
    }
    Ok(())
}

/// The rule for a symlink a set asks to create at `rel` with target `link`:
/// any target a filesystem can hold (Kopano administrators link to other
/// disks, absolute or with `..`), not empty, no NUL byte. Safety does not
/// come from the target text but from the order: links are created after
/// every file, and [`check_index`](super::files::check_index) refuses any
/// entry below a link.
pub fn check_link(rel: &str, link: &str) -> Result<()> {
    if link.is_empty() || link.contains('\0') {
        bail!("refusing symlink {rel} from the set: its target {link:?} cannot be created");
    }
    Ok(())
}

/// True when a symlink with target `link` could lead out of the restore
/// target (absolute, or `..` anywhere: a chain of links that each stay
/// inside lexically can still climb out, `d -> ..`, `x -> d/..`). Such
/// links are restored; this only decides what a reader may follow.
pub fn link_escapes(link: &str) -> bool {
    let path = Path::new(link);
    link.is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Creates the parent directories of `path` (owner-only), checked by `safe_join`.
pub fn create_parents(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    Ok(())
}

/// Creates a new file for restored data: owner-only until its attributes
/// are set, and never through a symlink planted at its name.
pub fn create_private(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("while creating {}", path.display()))
}

/// Gives a restored file the owner (as root), mode and mtime the set records.
pub fn apply_attributes(file: &fs::File, entry: &IndexEntry, as_root: bool) -> Result<()> {
    // Owner before mode: chown clears set-id bits.
    if as_root {
        std::os::unix::fs::fchown(file, Some(entry.uid), Some(entry.gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(entry.mode))?;
    file.set_modified(mtime_of(entry))?;
    Ok(())
}

/// The mtime the set records for an entry.
pub fn mtime_of(entry: &IndexEntry) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::new(entry.mtime.max(0) as u64, entry.mtime_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_absolute_and_parent_paths() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", ""] {
            assert!(safe_join(root.path(), Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            safe_join(root.path(), Path::new("8/13/161738.gz")).unwrap(),
            root.path().join("8/13/161738.gz")
        );
    }

    #[test]
    fn lexical_checks_match_safe_join() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", "."] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        check_rel("8/13/161738.gz").unwrap();
        for bad in ["/etc", "../x", "a/../b", ""] {
            assert!(link_escapes(bad), "{bad}");
        }
        assert!(!link_escapes("sub/file"));
        for fine in ["/srv/disk2/3", "../../1", "x"] {
            check_link("9/x/rel", fine).unwrap();
        }
        assert!(check_link("9/x/rel", "").is_err());
        assert!(check_link("9/x/rel", "a\0b").is_err());
    }

    #[test]
    fn refuses_to_write_through_a_symlink_in_the_target() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("8")).unwrap();
        let err = safe_join(root.path(), Path::new("8/13/1")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
