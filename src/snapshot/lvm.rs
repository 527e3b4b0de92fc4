//! LVM: `lvcreate --snapshot` of the logical volume under the attachment
//! store, mounted read-only in a private directory, removed after the copy.
//! Classic snapshots get a copy-on-write area; thin volumes need none.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::detect::Volume;
use super::mounts::{MOUNT_DIR, remove_mount_dirs, unmount};
use super::{PREFIX, exec};

const GIB: u64 = 1 << 30;
/// Upper bound of the default copy-on-write area.
const DEFAULT_MAX: u64 = 15 * GIB;
/// Default copy-on-write area as a share of the origin, in percent.
const DEFAULT_PERCENT: u64 = 20;

/// The logical volume to snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub vg: String,
    pub lv: String,
    pub fstype: String,
    /// A thin volume: its snapshot shares the pool and takes no size.
    pub thin: bool,
    pub pool: Option<String>,
    pub origin_bytes: u64,
    /// `[snapshot] lvm_size` in bytes, if configured.
    pub size: Option<u64>,
}

/// Free space of a volume group, in bytes and extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VgSpace {
    pub free_bytes: u64,
    pub extent_bytes: u64,
    pub free_extents: u64,
}

/// A snapshot that exists, as far as it was set up: each release step runs once.
#[derive(Debug)]
pub(crate) struct Held {
    pub vg: String,
    pub name: String,
    pub pool: Option<String>,
    /// The private directory holding the mount point, once created.
    pub dir: Option<PathBuf>,
    pub mounted: bool,
    pub removed: bool,
}

/// Runs an lvm reporting command and splits its rows at `|`.
fn report(program: &str, args: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut all = vec![
        "--noheadings",
        "--separator",
        "|",
        "--units",
        "b",
        "--nosuffix",
    ];
    all.extend_from_slice(args);
    let out = exec::run(program, &all)?;
    Ok(out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(|f| f.trim().to_string()).collect())
        .collect())
}

fn number(field: &str, what: &str) -> Result<u64> {
    // Sizes come as plain bytes with --units b --nosuffix; tolerate a fraction.
    field
        .split('.')
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("lvm reported {what} as {field:?}"))
}

/// Finds the logical volume behind the mounted device `vol`.
pub(crate) fn target_for(vol: &Volume, size: Option<u64>) -> Result<Target> {
    let rows = report(
        "lvs",
        &[
            "--options",
            "vg_name,lv_name,lv_attr,lv_size,pool_lv,lv_kernel_major,lv_kernel_minor",
        ],
    )
    .context("while looking for the logical volume under the attachment store")?;
    let row = rows
        .iter()
        .find(|r| r.len() == 7 && format!("{}:{}", r[5], r[6]) == vol.majmin)
        .with_context(|| {
            format!(
                "no active logical volume has device {} ({})",
                vol.majmin, vol.source
            )
        })?;
    let attr = row[2].as_bytes();
    if matches!(attr.first(), Some(b's' | b'S')) {
        bail!(
            "{}/{} is itself a snapshot; LVM cannot snapshot a snapshot",
            row[0],
            row[1]
        );
    }
    Ok(Target {
        vg: row[0].clone(),
        lv: row[1].clone(),
        fstype: vol.fstype.clone(),
        thin: attr.first() == Some(&b'V'),
        pool: Some(row[4].clone()).filter(|p| !p.is_empty()),
        origin_bytes: number(&row[3], "the volume's size")?,
        size,
    })
}

fn vg_space(vg: &str) -> Result<VgSpace> {
    let rows = report(
        "vgs",
        &["--options", "vg_free,vg_extent_size,vg_free_count", vg],
    )?;
    let row = rows
        .first()
        .filter(|r| r.len() == 3)
        .with_context(|| format!("vgs said nothing about volume group {vg}"))?;
    Ok(VgSpace {
        free_bytes: number(&row[0], "free space")?,
        extent_bytes: number(&row[1], "the extent size")?.max(1),
        free_extents: number(&row[2], "free extents")?,
    })
}

/// Extents for a classic snapshot: the configured size, or by default
/// min(free space, 20% of the origin, 15 GiB), rounded up to whole extents.
pub(crate) fn snapshot_extents(
    vg: &str,
    origin_bytes: u64,
    requested: Option<u64>,
    space: VgSpace,
) -> Result<u64> {
    let mib = |b: u64| b / (1 << 20);
    if space.free_extents == 0 {
        bail!(
            "volume group {vg} has no free space for a snapshot: free some extents \
             (e.g. lvreduce, or vgextend with a new disk) or set [snapshot] method = none"
        );
    }
    let bytes = match requested {
        Some(b) => b,
        None => space
            .free_bytes
            .min(origin_bytes / 100 * DEFAULT_PERCENT)
            .min(DEFAULT_MAX),
    };
    let extents = bytes.div_ceil(space.extent_bytes).max(1);
    if extents > space.free_extents {
        bail!(
            "volume group {vg} has {} MiB free, less than the configured snapshot size \
             [snapshot] lvm_size = {} MiB",
            mib(space.free_bytes),
            mib(bytes)
        );
    }
    Ok(extents)
}

/// Creates the snapshot LV `<name>` (not yet mounted).
pub(crate) fn create(t: &Target, name: &str) -> Result<Held> {
    let origin = format!("{}/{}", t.vg, t.lv);
    let mut args = vec!["--snapshot".to_string(), "--name".into(), name.into()];
    if t.thin {
        // Thin snapshots skip activation by default; we need it active.
        args.extend(["--setactivationskip".into(), "n".into()]);
    } else {
        let space = vg_space(&t.vg)?;
        let extents = snapshot_extents(&t.vg, t.origin_bytes, t.size, space)?;
        args.extend(["--extents".into(), extents.to_string()]);
    }
    args.push(origin.clone());
    exec::run("lvcreate", &args)
        .with_context(|| format!("while creating an LVM snapshot of {origin}"))?;
    Ok(Held {
        vg: t.vg.clone(),
        name: name.into(),
        pool: t.pool.clone().filter(|_| t.thin),
        dir: None,
        mounted: false,
        removed: false,
    })
}

/// Read-only mount options that never write to the snapshot. XFS refuses a
/// second mount of the origin's UUID without `nouuid`, and a plain `ro` mount
/// replays the log frozen by lvcreate INTO the snapshot (2 MiB of a 16 MiB
/// area in the VM test), hence `norecovery`. ext4's freeze leaves the journal
/// clean, so plain `ro` would do; `noload` guarantees no replay regardless.
pub(crate) fn mount_options(fstype: &str) -> &'static str {
    match fstype {
        "xfs" => "ro,nouuid,norecovery",
        "ext3" | "ext4" => "ro,noload",
        _ => "ro",
    }
}

/// Mounts the snapshot read-only at `<mount_base>/<name>/fs`. The directory
/// `<name>` is new and 0700: a mounted root keeps the origin's own mode, so
/// only the directory above it can keep other users out.
pub(crate) fn mount(held: &mut Held, t: &Target, mount_base: &Path) -> Result<PathBuf> {
    let private = mount_base.join(&held.name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("while creating {}", private.display()))?;
    held.dir = Some(private.clone());
    let dir = private.join(MOUNT_DIR);
    fs::create_dir(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let rows = report(
        "lvs",
        &[
            "--options",
            "lv_dm_path",
            &format!("{}/{}", held.vg, held.name),
        ],
    )?;
    let device = rows
        .first()
        .and_then(|r| r.first())
        .filter(|d| !d.is_empty())
        .with_context(|| format!("lvs gave no device for {}/{}", held.vg, held.name))?
        .clone();
    exec::run(
        "mount",
        [
            "-t".as_ref(),
            t.fstype.as_ref(),
            "-o".as_ref(),
            mount_options(&t.fstype).as_ref(),
            device.as_ref(),
            dir.as_os_str(),
        ],
    )
    .with_context(|| format!("while mounting the snapshot {device}"))?;
    held.mounted = true;
    Ok(dir)
}

/// The snapshot's fill level in percent (the thin pool's, for thin
/// snapshots); an overflowed snapshot is an error, never a number.
pub(crate) fn fill(held: &Held) -> Result<Option<f64>> {
    let lv = format!("{}/{}", held.vg, held.name);
    let subject = match &held.pool {
        Some(pool) => format!("{}/{pool}", held.vg),
        None => lv.clone(),
    };
    let rows = report("lvs", &["--options", "lv_attr,data_percent", &subject])?;
    let row = rows
        .first()
        .filter(|r| r.len() == 2)
        .with_context(|| format!("lvs said nothing about {subject}"))?;
    let invalid = row[0].as_bytes().get(4) == Some(&b'I');
    let percent: Option<f64> = row[1].parse().ok();
    if invalid || percent.is_some_and(|p| p >= 100.0) {
        let (full, advice) = match &held.pool {
            Some(_) => (
                format!("its thin pool {subject} is full"),
                "extend the thin pool",
            ),
            None => (
                "its copy-on-write area is full".into(),
                "set a larger [snapshot] lvm_size",
            ),
        };
        bail!(
            "the LVM snapshot {lv} overflowed ({full}): the origin changed more than the \
             snapshot could hold, so a copy taken from it cannot be trusted; {advice}"
        );
    }
    Ok(percent)
}

/// Removes a snapshot LV.
pub(crate) fn remove(vg: &str, name: &str) -> Result<()> {
    let lv = format!("{vg}/{name}");
    exec::run("lvremove", ["--force", "--yes", lv.as_str()])
        .with_context(|| format!("while removing the LVM snapshot {lv}"))?;
    Ok(())
}

/// Unmounts, removes the mount point, removes the LV; safe to call again
/// after a failed step.
pub(crate) fn release(held: &mut Held) -> Result<()> {
    if let Some(private) = &held.dir {
        if held.mounted {
            unmount(&private.join(MOUNT_DIR))?;
            held.mounted = false;
        }
        remove_mount_dirs(private)?;
        held.dir = None;
    }
    if !held.removed {
        remove(&held.vg, &held.name)?;
        held.removed = true;
    }
    Ok(())
}

/// Snapshot LVs a crashed earlier run left in `vg`: only ours, by name.
pub(crate) fn stale(vg: &str) -> Result<Vec<String>> {
    let rows = report("lvs", &["--options", "lv_name,origin", vg])?;
    Ok(rows
        .into_iter()
        .filter(|r| r.len() == 2 && r[0].starts_with(PREFIX) && !r[1].is_empty())
        .map(|r| r[0].clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn space(free_extents: u64) -> VgSpace {
        VgSpace {
            free_bytes: free_extents * 4 * MIB,
            extent_bytes: 4 * MIB,
            free_extents,
        }
    }

    #[test]
    fn default_size_is_the_smallest_of_free_share_and_cap() {
        // 20% of a 100 GiB origin is 20 GiB, capped at 15 GiB.
        let e = snapshot_extents("vg", 100 * GIB, None, space(100_000)).unwrap();
        assert_eq!(e, 15 * GIB / (4 * MIB));
        // 20% of 1 GiB, rounded up to whole 4 MiB extents.
        let e = snapshot_extents("vg", GIB, None, space(100_000)).unwrap();
        assert_eq!(e, (GIB / 5).div_ceil(4 * MIB));
        // Only 3 extents free: take them.
        assert_eq!(
            snapshot_extents("vg", 100 * GIB, None, space(3)).unwrap(),
            3
        );
    }

    #[test]
    fn configured_size_is_rounded_and_checked_against_free_space() {
        assert_eq!(
            snapshot_extents("vg", GIB, Some(5 * MIB), space(10)).unwrap(),
            2
        );
        let err = snapshot_extents("vg", GIB, Some(100 * MIB), space(10)).unwrap_err();
        assert!(format!("{err}").contains("lvm_size"), "{err}");
    }

    #[test]
    fn a_full_volume_group_is_refused() {
        let err = snapshot_extents("vg0", GIB, None, space(0)).unwrap_err();
        assert!(
            format!("{err}").contains("volume group vg0 has no free space"),
            "{err}"
        );
    }

    #[test]
    fn only_xfs_gets_nouuid() {
        assert_eq!(mount_options("xfs"), "ro,nouuid,norecovery");
        assert_eq!(mount_options("ext4"), "ro,noload");
        assert_eq!(mount_options("vfat"), "ro");
    }
}
