//! Real btrfs snapshots on a loop-mounted image: detection, the frozen view,
//! stale snapshots of a crashed run, nothing left behind, and cleanup when
//! a process holding a snapshot gets SIGTERM/SIGINT/SIGHUP. Needs root.

mod snapfix;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kcbackup::settings::SnapshotMethod;
use kcbackup::snapshot::{self, Method, Request};
use nix::sys::signal::Signal;
use snapfix::{Holder, LoopFs, loop_fs_or_skip, mounts_mentioning, root_or_skip, sh, write_tree};

/// A btrfs image with subvolume `kopano` holding `attachments/` and `etc/`.
fn btrfs_store() -> (LoopFs, PathBuf) {
    let fs = LoopFs::new("btrfs", 256);
    let subvol = fs.mount.join("kopano");
    sh("btrfs", &["subvolume", "create", subvol.to_str().unwrap()]);
    write_tree(
        &subvol,
        &[
            ("attachments/1/0/1", "first"),
            ("attachments/2/0/2.gz", "second"),
            ("etc/server.cfg", "attachment_storage = files\n"),
        ],
    );
    (fs, subvol)
}

fn request(method: SnapshotMethod, subvol: &Path, base: &Path) -> Request {
    Request {
        config_dir: Some(subvol.join("etc")),
        mount_base: base.to_path_buf(),
        ..Request::new(method, subvol.join("attachments"))
    }
}

/// Our snapshot subvolumes anywhere on the filesystem mounted at `mount`.
fn our_subvolumes(mount: &Path) -> Vec<String> {
    sh("btrfs", &["subvolume", "list", mount.to_str().unwrap()])
        .lines()
        .filter(|l| l.contains("kcbackup-snap-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn snapshot_keeps_files_deleted_from_the_live_tree() {
    if !loop_fs_or_skip("snapshot_keeps_files_deleted_from_the_live_tree", "btrfs") {
        return;
    }
    let (fs_, subvol) = btrfs_store();
    let base = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&request(SnapshotMethod::Auto, &subvol, base.path())).unwrap();
    assert_eq!(plan.method, Method::Btrfs, "{}", plan.note);
    assert!(plan.uncovered.is_empty(), "{:?}", plan.uncovered);

    let clock = Instant::now();
    let snap = snapshot::take(&plan, "20260101T000000Z").unwrap();
    let took = clock.elapsed();
    let live = subvol.join("attachments/1/0/1");
    fs::remove_file(&live).unwrap();
    fs::write(subvol.join("attachments/3"), "newer").unwrap();
    fs::write(subvol.join("etc/server.cfg"), "changed").unwrap();

    let view = snap.view_path(&live);
    assert_ne!(view, live);
    assert_eq!(fs::read_to_string(&view).unwrap(), "first");
    assert!(!snap.view_path(&subvol.join("attachments/3")).exists());
    let cfg = snap.view_path(&subvol.join("etc/server.cfg"));
    assert_eq!(
        fs::read_to_string(cfg).unwrap(),
        "attachment_storage = files\n"
    );
    assert!(
        fs::write(view.with_file_name("x"), "no").is_err(),
        "the snapshot must be read-only"
    );
    assert_eq!(our_subvolumes(&fs_.mount).len(), 1);
    let info = snap.info(Some(snap.taken_at())).unwrap();
    assert_eq!(info.method, Method::Btrfs);
    assert_eq!(info.window_ms, Some(0));
    assert_eq!(info.fill_percent, None);

    let clock2 = Instant::now();
    snap.release().unwrap();
    println!(
        "btrfs snapshot: take {} ms, release {} ms",
        took.as_millis(),
        clock2.elapsed().as_millis()
    );
    assert!(our_subvolumes(&fs_.mount).is_empty());
    assert!(mounts_mentioning("kcbackup-snap-").is_empty());
}

#[test]
fn auto_is_none_on_ext4_and_tmpfs_and_says_so() {
    // The temp dir lives on the machine's root filesystem: never btrfs here.
    let dir = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&Request::new(SnapshotMethod::Auto, dir.path())).unwrap();
    if plan.method == Method::None {
        assert!(plan.note.starts_with("no snapshot:"), "{}", plan.note);
        let snap = snapshot::take(&plan, "t").unwrap();
        assert_eq!(snap.view_path(dir.path()), dir.path());
        assert_eq!(snap.info(None).unwrap().method, Method::None);
        snap.release().unwrap();
    }
    if !root_or_skip("auto_is_none_on_ext4_and_tmpfs_and_says_so (tmpfs part)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    sh(
        "mount",
        &["-t", "tmpfs", "kcbt-tmpfs", tmp.path().to_str().unwrap()],
    );
    let plan = snapshot::plan(&Request::new(SnapshotMethod::Auto, tmp.path()));
    sh("umount", &[tmp.path().to_str().unwrap()]);
    let plan = plan.unwrap();
    assert_eq!(plan.method, Method::None);
    assert!(plan.note.contains("tmpfs"), "{}", plan.note);
    for (method, word) in [
        (SnapshotMethod::Btrfs, "btrfs"),
        (SnapshotMethod::Lvm, "LVM"),
    ] {
        let err = snapshot::plan(&Request::new(method, dir.path())).unwrap_err();
        assert!(format!("{err:#}").contains(word), "{err:#}");
        assert_eq!(
            kcbackup::error::exit_for(&err),
            kcbackup::error::Exit::Usage
        );
    }
}

#[test]
fn stale_snapshots_of_a_crashed_run_are_removed_and_nothing_else() {
    if !loop_fs_or_skip(
        "stale_snapshots_of_a_crashed_run_are_removed_and_nothing_else",
        "btrfs",
    ) {
        return;
    }
    let (fs_, subvol) = btrfs_store();
    let base = tempfile::tempdir().unwrap();
    let plan = snapshot::plan(&request(SnapshotMethod::Btrfs, &subvol, base.path())).unwrap();
    // A crash: the process holding the snapshot dies without cleanup.
    let holder = Holder::start(&subvol.join("attachments"), base.path(), "poll");
    assert_eq!(holder.signal_and_wait(Signal::SIGKILL), None);
    // Look-alikes that are not ours to remove.
    let parent = subvol.parent().unwrap();
    sh(
        "btrfs",
        &[
            "subvolume",
            "create",
            parent.join(".other-snap").to_str().unwrap(),
        ],
    );
    fs::create_dir(parent.join(".kcbackup-snap-plain-dir")).unwrap();
    assert_eq!(our_subvolumes(&fs_.mount).len(), 1);

    let removed = snapshot::remove_stale(&plan).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].ends_with(".kcbackup-snap-held"), "{removed:?}");
    assert!(our_subvolumes(&fs_.mount).is_empty());
    assert!(parent.join(".other-snap").is_dir());
    assert!(parent.join(".kcbackup-snap-plain-dir").is_dir());
    assert!(snapshot::remove_stale(&plan).unwrap().is_empty());
    // The next run's snapshot works as usual.
    snapshot::take(&plan, "next").unwrap().release().unwrap();
}

#[test]
fn a_subvolume_mounted_on_its_own_is_snapshotted_inside_itself() {
    if !loop_fs_or_skip(
        "a_subvolume_mounted_on_its_own_is_snapshotted_inside_itself",
        "btrfs",
    ) {
        return;
    }
    let (mut fs_, _) = btrfs_store();
    let own = fs_.dir.path().join("own");
    fs::create_dir(&own).unwrap();
    let device = fs_.device.clone();
    fs_.mount_at(&device, &own, &["subvol=kopano"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let req = Request {
        config_dir: Some(elsewhere.path().to_path_buf()),
        mount_base: elsewhere.path().to_path_buf(),
        ..Request::new(SnapshotMethod::Auto, own.join("attachments"))
    };
    let plan = snapshot::plan(&req).unwrap();
    assert_eq!(plan.method, Method::Btrfs);
    assert_eq!(plan.uncovered, vec![elsewhere.path().to_path_buf()]);
    let snap = snapshot::take(&plan, "own").unwrap();
    let view = snap.view_path(&own.join("attachments/2/0/2.gz"));
    assert!(view.starts_with(own.join(".kcbackup-snap-own")), "{view:?}");
    fs::remove_file(own.join("attachments/2/0/2.gz")).unwrap();
    assert_eq!(fs::read_to_string(view).unwrap(), "second");
    assert!(!snap.covers(elsewhere.path()));
    snap.release().unwrap();
    assert!(our_subvolumes(&fs_.mount).is_empty());
}

/// Hidden helper: run by the signal and crash tests in a child process.
#[test]
#[ignore = "helper: started by the signal and crash tests"]
fn hold_snapshot_until_signalled() {
    snapfix::hold_snapshot_until_signalled();
}

#[test]
fn signals_while_holding_a_snapshot_clean_up() {
    if !loop_fs_or_skip("signals_while_holding_a_snapshot_clean_up", "btrfs") {
        return;
    }
    let (fs_, subvol) = btrfs_store();
    let base = tempfile::tempdir().unwrap();
    for (sig, mode, code) in [
        (Signal::SIGTERM, "sleeper", 143),
        (Signal::SIGINT, "poll", 130),
        (Signal::SIGHUP, "sleeper", 143),
    ] {
        let holder = Holder::start(&subvol.join("attachments"), base.path(), mode);
        let view = holder.view.clone();
        assert!(view.join("1/0/1").is_file());
        assert_eq!(our_subvolumes(&fs_.mount).len(), 1);
        assert_eq!(holder.signal_and_wait(sig), Some(code), "{sig} ({mode})");
        assert!(!view.exists(), "snapshot left after {sig}");
        assert!(our_subvolumes(&fs_.mount).is_empty());
    }
}
