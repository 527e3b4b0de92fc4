//! The real `kcbackup backup` with LVM snapshots, inside the test VM
//! (`make test-lvm`; this kernel has no device-mapper): MariaDB started from
//! the host's binaries by the sandbox, a generated store on the ext4, XFS
//! and full volumes that tests/vm/guest-lvm.sh prepared (`KCBT_LVM_*`), the
//! dump paused by a wrapper while files are purged, a crash, a full volume
//! group. Ignored elsewhere.

mod common;
mod snapfix;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::snapbackup::{
    Finished, SlowDump, assert_victims_captured, at, backup, delete_victims, pick_victims,
    published_sets, snapshot_mounts, spawn_backup, work_dirs, write_config,
};
use kcbackup::generator::{GeneratedStore, StoreSpec, generate};
use kcbackup::layout::Layout;
use kcbackup::repo::manifest::Manifest;
use kcbackup::snapshot::Method;
use nix::sys::signal::Signal;
use snapfix::sh;

const WHY: &str = "needs LVM: run by tests/vm/run-lvm-tests inside a VM";

/// How long the dump wrapper pauses: longer than lvcreate and the mount
/// take under the VM's software emulation, so the purge happens while the
/// dump is still paused.
const PAUSE_S: u32 = 20;

/// A generated store on the volume mounted at `$var`, a repository and a
/// scratch directory in the guest's RAM; `None` (with a reason) outside the VM.
struct Fixture {
    store: GeneratedStore,
    repo: PathBuf,
    dir: tempfile::TempDir,
}

fn fixture(var: &str, name: &str) -> Option<Fixture> {
    let Ok(mnt) = std::env::var(var) else {
        println!("SKIPPED: ${var} is not set; {WHY}");
        return None;
    };
    let root = Path::new(&mnt).join(name);
    let _ = fs::remove_dir_all(&root);
    let clock = Instant::now();
    let spec = StoreSpec::small(Layout::FilesV1 { l1: 10, l2: 20 }, common::unique_db(name));
    let store = generate(common::server(), &root, &spec).expect("generating");
    println!(
        "{name}: store generated in {:.1} s (MariaDB started on first use)",
        clock.elapsed().as_secs_f64()
    );
    let dir = tempfile::Builder::new()
        .prefix("kcbt-lvmbackup-")
        .tempdir()
        .unwrap();
    Some(Fixture {
        repo: dir.path().join("repo"),
        store,
        dir,
    })
}

impl Fixture {
    fn config(&self, method: &str, dump: Option<&SlowDump>) -> PathBuf {
        write_config(self.dir.path(), &self.store, &self.repo, method, dump)
    }

    fn assert_nothing_left(&self) {
        assert_eq!(our_lvs(), Vec::<String>::new(), "snapshot LV left");
        assert_eq!(snapshot_mounts(), Vec::<String>::new(), "mount left");
        assert_eq!(mount_dirs(), Vec::<PathBuf>::new(), "mount directory left");
        assert_eq!(work_dirs(&self.repo), Vec::<String>::new(), "work dir left");
    }
}

/// Our snapshot LVs in every volume group, as `vg/lv`.
fn our_lvs() -> Vec<String> {
    sh("lvs", &["--noheadings", "-o", "vg_name,lv_name"])
        .lines()
        .filter(|l| l.contains("kcbackup-snap-"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("/"))
        .collect()
}

/// Private mount directories under root's mount base.
fn mount_dirs() -> Vec<PathBuf> {
    fs::read_dir("/run/kcbackup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// A backup whose dump pauses after its transaction began; once the
/// snapshot is mounted, files are purged from the live volume. The set must
/// still hold them, read from the LVM snapshot.
fn purge_during_backup(var: &str, name: &str, method: &str) {
    let Some(f) = fixture(var, name) else { return };
    let dump = SlowDump::new(f.dir.path(), PAUSE_S);
    let victims = pick_victims(&f.store, 4);
    let mut run = spawn_backup(&f.config(method, Some(&dump)));
    run.wait_for("the snapshot mount", || !snapshot_mounts().is_empty());
    assert_eq!(our_lvs().len(), 1, "{:?}", our_lvs());
    delete_victims(&f.store, &victims);
    assert!(
        !dump.resumed.exists(),
        "the dump was no longer paused when the files were purged"
    );
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let j = &done.json;
    assert_eq!(j["status"], "complete", "{j:#}");
    assert_eq!(at(j, "attachments.missing"), 0, "{j:#}");
    let snap = &j["snapshot"];
    assert_eq!(snap["method"], "lvm", "{j:#}");
    let fill = snap["fill_percent"].as_f64().expect("fill_percent");
    assert!((0.0..100.0).contains(&fill), "{fill}");
    let window = snap["window_ms"].as_i64().expect("window_ms");
    assert!(
        (0..i64::from(PAUSE_S) * 1000).contains(&window),
        "window {window} ms"
    );
    let note = j["snapshot_note"].as_str().unwrap_or("");
    assert!(note.starts_with("LVM snapshot of kcbt/"), "{note}");
    let set = j["set"].as_str().expect("set id");
    let manifest = Manifest::load(&f.repo.join("sets").join(set)).expect("manifest");
    let info = manifest.snapshot.expect("manifest snapshot");
    assert_eq!(info.method, Method::Lvm);
    assert_eq!(info.window_ms, Some(window));
    assert_victims_captured(&f.repo, set, &victims);
    f.assert_nothing_left();
    println!(
        "{name} ({method}): {note}; consistency window {window} ms, fill {fill}%, backup {:.1} s",
        done.seconds
    );
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn lvm_snapshot_of_ext4_keeps_files_purged_while_the_dump_runs() {
    purge_during_backup("KCBT_LVM_EXT4", "backup_ext4", "lvm");
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn auto_finds_lvm_under_xfs_and_keeps_files_purged_while_the_dump_runs() {
    purge_during_backup("KCBT_LVM_XFS", "backup_xfs", "auto");
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn a_crashed_backups_snapshot_is_removed_by_the_next_run_and_sigterm_leaves_none() {
    let Some(f) = fixture("KCBT_LVM_XFS", "backup_crash") else {
        return;
    };
    let dump = SlowDump::new(f.dir.path(), 60);
    // A crash: SIGKILL while the snapshot is mounted, so no cleanup runs.
    let mut run = spawn_backup(&f.config("lvm", Some(&dump)));
    run.wait_for("the snapshot mount", || !snapshot_mounts().is_empty());
    run.signal(Signal::SIGKILL);
    assert_eq!(run.finish().code, None);
    let left = our_lvs();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(snapshot_mounts().len(), 1);

    let done = backup(&f.config("lvm", None));
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.json["status"], "complete");
    assert_eq!(done.json["snapshot"]["method"], "lvm");
    let removed: Vec<&str> = done.json["removed_snapshots"]
        .as_array()
        .expect("removed_snapshots")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    println!("removed after the crash: {removed:?}");
    assert!(removed.contains(&left[0].as_str()), "{removed:?}");
    assert!(
        removed.iter().any(|r| r.ends_with("/fs")),
        "the mount: {removed:?}"
    );
    assert_eq!(
        done.json["removed_leftovers"].as_array().map(Vec::len),
        Some(1)
    );
    f.assert_nothing_left();

    // SIGTERM while the snapshot is mounted: everything is undone at once.
    dump.reset();
    let mut run = spawn_backup(&f.config("lvm", Some(&dump)));
    run.wait_for("the snapshot mount", || !snapshot_mounts().is_empty());
    let signalled = Instant::now();
    run.signal(Signal::SIGTERM);
    let done = run.finish();
    assert_eq!(done.code, Some(143), "{}", done.stderr);
    let stop = signalled.elapsed().as_secs_f64();
    println!("stopped {stop:.1} s after SIGTERM (unmount and lvremove included)");
    assert!(stop < 30.0, "took {stop} s, not the dump's 60 s pause");
    assert_eq!(published_sets(&f.repo).len(), 1);
    f.assert_nothing_left();
}

#[test]
#[ignore = "needs LVM: run by tests/vm/run-lvm-tests inside a VM"]
fn a_full_volume_group_fails_clearly_and_stops_the_dump() {
    let Some(f) = fixture("KCBT_LVM_FULL", "backup_full") else {
        return;
    };
    // Were the dump run to its end, this would take over a minute.
    let dump = SlowDump::new(f.dir.path(), 60);
    let done: Finished = backup(&f.config("lvm", Some(&dump)));
    println!("full VG ({:.1} s): {}", done.seconds, done.stderr.trim());
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let msg = done.stderr.trim();
    assert!(
        msg.contains("volume group kcbtfull has no free space for a snapshot"),
        "{msg}"
    );
    assert!(msg.contains("no set was published"), "{msg}");
    assert!(msg.contains("method = none"), "the way out: {msg}");
    assert_eq!(msg.lines().count(), 1, "one readable message: {msg}");
    assert!(done.seconds < 40.0, "the dump was not stopped");
    assert!(!dump.resumed.exists(), "the dump ran on after the failure");
    assert_eq!(published_sets(&f.repo), Vec::<String>::new());
    f.assert_nothing_left();

    // auto picks LVM there too, and says the same.
    let done = backup(&f.config("auto", None));
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("has no free space"), "{}", done.stderr);
    f.assert_nothing_left();
}
