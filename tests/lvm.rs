//! Real LVM snapshots of ext4, XFS and thin volumes. This kernel has no
//! device-mapper, so they run in a VM: `tests/vm/run-lvm-tests` boots it, and
//! `tests/vm/guest-lvm.sh` sets up the volumes (`KCBT_LVM_*`). Ignored elsewhere.

mod snapfix;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kcbackup::settings::SnapshotMethod;
use kcbackup::snapshot::{self, Method, Request};
use nix::sys::signal::Signal;
use snapfix::{Holder, mounts_mentioning, sh, write_tree};

const WHY: &str = "needs LVM: run by tests/vm/run-lvm-tests inside a VM";

/// The mount point of the volume the guest script prepared, or `None`
/// (with a printed reason) outside the VM.
fn volume(var: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => {
            println!("SKIPPED: ${var} is not set; {WHY}");
            None
        }
    }
}

/// A fresh attachment tree on the volume mounted at `mnt`.
fn store(mnt: &Path, name: &str) -> PathBuf {
    let root = mnt.join(name);
    let _ = fs::remove_dir_all(&root);
    write_tree(
        &root,
        &[
            ("attachments/1/0/1", "first"),
            ("attachments/2/0/2.gz", "second"),
            ("etc/server.cfg", "attachment_storage = files\n"),
        ],
    );
    root
}

fn request(root: &Path, base: &Path) -> Request {
    Request {
        config_dir: Some(root.join("etc")),
        mount_base: base.to_path_buf(),
        ..Request::new(SnapshotMethod::Auto, root.join("attachments"))
    }
}

/// Our snapshot LVs in every volume group.
fn our_lvs() -> Vec<String> {
    sh("lvs", &["--noheadings", "-o", "vg_name,lv_name"])
        .lines()
        .filter(|l| l.contains("kcbackup-snap-"))
        .map(|l| l.trim().to_string())
        .collect()
}

fn assert_nothing_left() {
    assert_eq!(our_lvs(), Vec::<String>::new(), "snapshot LVs left");
    assert_eq!(
        mounts_mentioning("kcbackup-snap-"),
        Vec::<String>::new(),
        "snapshot mounts left"
    );
}

/// Snapshot, delete live, read from the snapshot, check the mount, release.
fn frozen_and_read_only(var: &str, fstype: &str, mount_option: &str) {
    let Some(mnt) = volume(var) else { return };
    let root = store(&mnt, "frozen");
    let base = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&request(&root, base.path())).unwrap();
    assert_eq!(plan.method, Method::Lvm, "{}", plan.note);
    assert!(plan.note.contains(fstype), "{}", plan.note);
    assert!(plan.uncovered.is_empty(), "{:?}", plan.uncovered);

    let clock = std::time::Instant::now();
    let snap = snapshot::take(&plan, "frozen").unwrap();
    println!(
        "{fstype}: LVM snapshot taken and mounted in {:?}",
        clock.elapsed()
    );
    let live = root.join("attachments/1/0/1");
    fs::remove_file(&live).unwrap();
    fs::write(root.join("etc/server.cfg"), "changed").unwrap();
    let view = snap.view_path(&live);
    assert!(view.starts_with(base.path()), "{view:?}");
    assert_eq!(fs::read_to_string(&view).unwrap(), "first");
    let cfg = fs::read_to_string(snap.view_path(&root.join("etc/server.cfg"))).unwrap();
    assert_eq!(cfg, "attachment_storage = files\n");
    assert!(
        fs::write(view.with_file_name("x"), "no").is_err(),
        "writable"
    );
    let mount_line = mounts_mentioning("kcbackup-snap-frozen").join("\n");
    assert!(mount_line.contains(" ro"), "{mount_line}");
    assert!(mount_line.contains(mount_option), "{mount_line}");
    let mode = fs::metadata(base.path().join("kcbackup-snap-frozen")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
        0
    );

    let info = snap.info(Some(snap.taken_at())).unwrap();
    let fill = info.fill_percent.expect("fill percent");
    assert!((0.0..100.0).contains(&fill), "{fill}");
    println!("{fstype}: fill {fill}% after deleting one file");
    let clock = std::time::Instant::now();
    snap.release().unwrap();
    println!("{fstype}: released in {:?}", clock.elapsed());
    assert_nothing_left();
    assert!(!base.path().join("kcbackup-snap-frozen").exists());
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn ext4_snapshot_is_frozen_and_read_only() {
    frozen_and_read_only("KCBT_LVM_EXT4", "ext4", "ro");
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn xfs_snapshot_is_frozen_and_read_only() {
    frozen_and_read_only("KCBT_LVM_XFS", "xfs", "norecovery");
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn stale_snapshot_of_a_crashed_run_is_removed() {
    let Some(mnt) = volume("KCBT_LVM_XFS") else {
        return;
    };
    let root = store(&mnt, "stale");
    let base = tempfile::tempdir().unwrap();
    let holder = Holder::start(&root.join("attachments"), base.path(), "poll");
    assert!(holder.view.join("1/0/1").is_file());
    assert_eq!(holder.signal_and_wait(Signal::SIGKILL), None);
    assert_eq!(our_lvs().len(), 1);
    assert_eq!(mounts_mentioning("kcbackup-snap-held").len(), 1);

    let plan = snapshot::plan(&request(&root, base.path())).unwrap();
    let removed = snapshot::remove_stale(&plan).unwrap();
    println!("removed: {removed:?}");
    assert!(removed.iter().any(|r| r.ends_with("/kcbackup-snap-held")));
    assert!(
        removed
            .iter()
            .any(|r| r.ends_with("kcbt/kcbackup-snap-held"))
    );
    assert_nothing_left();
    assert!(!base.path().join("kcbackup-snap-held").exists());
    snapshot::take(&plan, "next").unwrap().release().unwrap();
    assert_nothing_left();
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn a_full_volume_group_is_refused() {
    let Some(mnt) = volume("KCBT_LVM_FULL") else {
        return;
    };
    let root = store(&mnt, "full");
    let base = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&request(&root, base.path())).unwrap();
    assert_eq!(plan.method, Method::Lvm);
    let err = snapshot::take(&plan, "full")
        .err()
        .expect("must be refused");
    let msg = format!("{err:#}");
    println!("refused: {msg}");
    assert!(msg.contains("has no free space for a snapshot"), "{msg}");
    assert_nothing_left();
    assert!(!base.path().join("kcbackup-snap-full").exists());
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn fill_percent_grows_and_an_overflow_is_an_error() {
    let Some(mnt) = volume("KCBT_LVM_EXT4") else {
        return;
    };
    let root = store(&mnt, "overflow");
    let base = tempfile::tempdir().unwrap();
    let req = Request {
        lvm_size: Some(4 << 20),
        ..request(&root, base.path())
    };
    let plan = snapshot::plan(&req).unwrap();
    let snap = snapshot::take(&plan, "overflow").unwrap();
    let before = snap.fill_percent().unwrap().expect("percent");
    write_synced(&root.join("attachments/big1"), 1 << 20);
    let after = snap.fill_percent().unwrap().expect("percent");
    println!("fill: {before}% -> {after}% after writing 1 MiB to the origin");
    assert!(after > before, "{before} -> {after}");
    write_synced(&root.join("attachments/big2"), 8 << 20);
    let err = snap
        .info(None)
        .expect_err("an overflowed snapshot is an error");
    let msg = format!("{err:#}");
    println!("overflow: {msg}");
    assert!(msg.contains("overflowed"), "{msg}");
    snap.release().unwrap();
    assert_nothing_left();
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn thin_snapshot_takes_no_size_and_reports_the_pool_fill() {
    let Some(mnt) = volume("KCBT_LVM_THIN") else {
        return;
    };
    let root = store(&mnt, "thin");
    let base = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&request(&root, base.path())).unwrap();
    assert!(plan.note.contains("thin"), "{}", plan.note);
    let snap = snapshot::take(&plan, "thin").unwrap();
    let live = root.join("attachments/2/0/2.gz");
    fs::remove_file(&live).unwrap();
    assert_eq!(fs::read_to_string(snap.view_path(&live)).unwrap(), "second");
    let fill = snap.info(None).unwrap().fill_percent.expect("pool fill");
    println!("thin: pool {fill}% full");
    assert!(fill > 0.0 && fill < 100.0, "{fill}");
    snap.release().unwrap();
    assert_nothing_left();
}

fn write_synced(path: &Path, bytes: usize) {
    let mut f = fs::File::create(path).unwrap();
    // Not all zeros, so nothing along the way can skip the writes.
    let chunk: Vec<u8> = (0..1 << 16).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..bytes / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn sigterm_while_holding_a_snapshot_cleans_up() {
    let Some(mnt) = volume("KCBT_LVM_EXT4") else {
        return;
    };
    let root = store(&mnt, "signal");
    let base = tempfile::tempdir().unwrap();
    let holder = Holder::start(&root.join("attachments"), base.path(), "sleeper");
    assert!(holder.view.join("2/0/2.gz").is_file());
    assert_eq!(our_lvs().len(), 1);
    assert_eq!(holder.signal_and_wait(Signal::SIGTERM), Some(143));
    assert_nothing_left();
    assert!(!base.path().join("kcbackup-snap-held").exists());
}

/// Hidden helper: run by the signal and crash tests in a child process.
#[test]
#[ignore = "helper: started by the signal and crash tests"]
fn hold_snapshot_until_signalled() {
    snapfix::hold_snapshot_until_signalled();
}
