//! Finds the filesystem and block device under the attachment store and
//! resolves `[snapshot] method` (auto: btrfs subvolume -> btrfs, LVM logical
//! volume -> lvm, anything else -> none) into a [`Plan`].

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{Method, Plan, Request, Root, Target, btrfs, exec, lvm};
use crate::error::config_error;
use crate::settings::SnapshotMethod;

/// The mounted filesystem a path lives on, as `findmnt -T` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Volume {
    /// Mount point.
    pub target: PathBuf,
    /// Device (without btrfs's `[/subvol]` suffix).
    pub source: String,
    pub fstype: String,
    #[serde(rename = "maj:min")]
    pub majmin: String,
    /// The directory of the filesystem mounted at `target` (not `/` for bind
    /// mounts and btrfs subvolume mounts).
    pub fsroot: PathBuf,
}

impl Volume {
    /// Where `path` (canonical, on this mount) lives relative to the
    /// filesystem's root: what it is called inside a snapshot of the device.
    pub fn rel_in_fs(&self, path: &Path) -> PathBuf {
        let below = path.strip_prefix(&self.target).unwrap_or(Path::new(""));
        self.fsroot
            .strip_prefix("/")
            .unwrap_or(&self.fsroot)
            .join(below)
    }
}

#[derive(Deserialize)]
struct FindmntOutput {
    filesystems: Vec<Volume>,
}

/// The mount that holds `path` (which must exist).
pub fn volume_of(path: &Path) -> Result<Volume> {
    let out = exec::run(
        "findmnt",
        [
            "--json".as_ref(),
            "--nofsroot".as_ref(),
            "--output".as_ref(),
            "TARGET,SOURCE,FSTYPE,MAJ:MIN,FSROOT".as_ref(),
            "--target".as_ref(),
            path.as_os_str(),
        ],
    )?;
    let parsed: FindmntOutput = serde_json::from_str(&out)
        .with_context(|| format!("while reading findmnt's answer for {}", path.display()))?;
    parsed
        .filesystems
        .into_iter()
        .next_back()
        .with_context(|| format!("findmnt found no mount for {}", path.display()))
}

/// True when the block device `maj:min` is an LVM logical volume (device-mapper
/// UUIDs of LVM volumes start with `LVM-`; LUKS, multipath etc. do not).
pub fn is_lvm_device(majmin: &str) -> bool {
    fs::read_to_string(format!("/sys/dev/block/{majmin}/dm/uuid"))
        .map(|u| u.starts_with("LVM-"))
        .unwrap_or(false)
}

const NONE_NOTE: &str = "snapshot method none: attachments are copied from the live tree";

/// Resolves the requested method for the attachment store. Explicit methods
/// that cannot work are configuration errors; `auto` falls back to none.
pub fn plan(req: &Request) -> Result<Plan> {
    // A live copy needs nothing from the filesystem: not even the directory.
    if req.method == SnapshotMethod::None {
        return Ok(plan_none(req, NONE_NOTE.into()));
    }
    let source = fs::canonicalize(&req.attachment_path).with_context(|| {
        format!(
            "attachment_path {} is not accessible",
            req.attachment_path.display()
        )
    })?;
    let vol = volume_of(&source)?;
    let on_btrfs = vol.fstype == "btrfs";
    let on_lvm = is_lvm_device(&vol.majmin);
    let place = format!(
        "{} is on {} ({}, mounted at {})",
        source.display(),
        vol.fstype,
        vol.source,
        vol.target.display()
    );
    let method = match req.method {
        SnapshotMethod::None => return Ok(none_plan(req, source, NONE_NOTE.into())),
        SnapshotMethod::Btrfs if !on_btrfs => {
            return config_error(format!(
                "snapshot method btrfs: {place}, not btrfs; use method = auto or none"
            ));
        }
        SnapshotMethod::Lvm if on_btrfs => {
            // Two mounted copies of one btrfs (same UUID) confuse the kernel.
            return config_error(format!(
                "snapshot method lvm: {place}; use method = btrfs for btrfs"
            ));
        }
        SnapshotMethod::Lvm if !on_lvm => {
            return config_error(format!(
                "snapshot method lvm: {place}, which is not an LVM logical volume; \
                 use method = auto or none"
            ));
        }
        SnapshotMethod::Auto if !on_btrfs && !on_lvm => {
            return Ok(none_plan(
                req,
                source,
                format!(
                    "no snapshot: {place}, neither a btrfs subvolume nor an LVM logical \
                     volume; attachments are copied from the live tree"
                ),
            ));
        }
        SnapshotMethod::Btrfs => Method::Btrfs,
        SnapshotMethod::Lvm => Method::Lvm,
        SnapshotMethod::Auto if on_btrfs => Method::Btrfs,
        SnapshotMethod::Auto => Method::Lvm,
    };

    let (target, roots, uncovered, note) = if method == Method::Btrfs {
        let t = btrfs::target_for(&source, &vol)?;
        let (roots, uncovered) = cover(req, |p| btrfs::rel_in_subvolume(&t, &source, p))?;
        let note = format!(
            "btrfs snapshot of subvolume {} (created in {})",
            t.subvol.display(),
            t.snap_dir.display()
        );
        (Target::Btrfs(t), roots, uncovered, note)
    } else {
        let t = lvm::target_for(&vol, req.lvm_size)?;
        let (roots, uncovered) = cover(req, |p| {
            let v = volume_of(p)?;
            Ok((v.majmin == vol.majmin).then(|| v.rel_in_fs(p)))
        })?;
        let note = format!(
            "LVM snapshot of {}/{} ({}{})",
            t.vg,
            t.lv,
            vol.fstype,
            if t.thin { ", thin" } else { "" }
        );
        (Target::Lvm(t), roots, uncovered, note)
    };
    Ok(Plan {
        method,
        source,
        note,
        uncovered,
        target,
        roots,
        mount_base: req.mount_base.clone(),
    })
}

/// A plan without a snapshot, `note` saying why; the attachment path need
/// not exist (the `database` layout keeps attachments in the dump).
pub fn plan_none(req: &Request, note: String) -> Plan {
    let source =
        fs::canonicalize(&req.attachment_path).unwrap_or_else(|_| req.attachment_path.clone());
    none_plan(req, source, note)
}

fn none_plan(req: &Request, source: PathBuf, note: String) -> Plan {
    Plan {
        method: Method::None,
        source,
        note,
        uncovered: Vec::new(),
        target: Target::None,
        roots: Vec::new(),
        mount_base: req.mount_base.clone(),
    }
}

/// Splits the configured paths into those inside the snapshotted volume
/// (with their place in the snapshot) and those copied live.
fn cover(
    req: &Request,
    rel: impl Fn(&Path) -> Result<Option<PathBuf>>,
) -> Result<(Vec<Root>, Vec<PathBuf>)> {
    let mut roots = Vec::new();
    let mut uncovered = Vec::new();
    let paths = std::iter::once(&req.attachment_path).chain(req.config_dir.as_ref());
    for (i, given) in paths.enumerate() {
        let canonical = match fs::canonicalize(given) {
            Ok(c) => c,
            // A missing config dir is the settings' business, not ours.
            Err(_) if i > 0 => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("while resolving {}", given.display()));
            }
        };
        match rel(&canonical)? {
            Some(rel) => roots.push(Root {
                given: given.clone(),
                canonical,
                rel,
            }),
            None => uncovered.push(given.clone()),
        }
    }
    Ok((roots, uncovered))
}

/// Whether two paths are on one device (same `st_dev`): on btrfs, in one subvolume.
pub(crate) fn same_dev(a: &Path, b: &Path) -> Result<bool> {
    let da = fs::metadata(a).with_context(|| format!("while reading {}", a.display()))?;
    let db = fs::metadata(b).with_context(|| format!("while reading {}", b.display()))?;
    Ok(da.dev() == db.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_inside_a_bind_mount_maps_to_the_filesystem_root() {
        let v = Volume {
            target: "/srv/kopano".into(),
            source: "/dev/mapper/vg-data".into(),
            fstype: "xfs".into(),
            majmin: "253:2".into(),
            fsroot: "/exports/kopano".into(),
        };
        assert_eq!(
            v.rel_in_fs(Path::new("/srv/kopano/attachments")),
            PathBuf::from("exports/kopano/attachments")
        );
        let plain = Volume {
            fsroot: "/".into(),
            target: "/".into(),
            ..v
        };
        assert_eq!(plain.rel_in_fs(Path::new("/")), PathBuf::from(""));
    }

    #[test]
    fn findmnt_finds_the_root_mount() {
        let v = volume_of(Path::new("/")).unwrap();
        assert_eq!(v.target, PathBuf::from("/"));
        assert!(!v.fstype.is_empty());
        assert!(!is_lvm_device("0:0"));
    }
}
