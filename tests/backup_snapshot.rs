//! The real `kcbackup backup` with a btrfs snapshot: a generated Kopano store
//! on a subvolume of a btrfs image on a loop device, the real MariaDB dump
//! held up by a wrapper right after its transaction began, and attachment
//! files purged from the live tree meanwhile. With the snapshot the set is
//! complete; without it the same purge makes it incomplete. Needs root.

mod common;
mod snapfix;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::snapbackup::{
    Finished, SlowDump, Victim, assert_victims_captured, at, backup, delete_victims, pick_victims,
    published_sets, snapshot_mounts, spawn_backup, spawn_backup_env, work_dirs, write_config,
};
use kcbackup::commands::backup::PAUSE_CAPTURE;
use kcbackup::generator::{GeneratedStore, StoreSpec, generate};
use kcbackup::layout::Layout;
use kcbackup::repo::manifest::Manifest;
use kcbackup::signals::PAUSE_ENV;
use kcbackup::snapshot::Method;
use nix::sys::signal::Signal;
use snapfix::{LoopFs, loop_fs_or_skip, sh};

/// The snapshot lock is host-wide (`/run/kcbackup`): one backup at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A btrfs image with subvolume `kopano` holding a generated store (its
/// attachment tree and etc/kopano), a repository and a scratch directory
/// off the image.
struct Fixture {
    fs: LoopFs,
    store: GeneratedStore,
    repo: PathBuf,
    dir: tempfile::TempDir,
}

fn fixture(test: &str) -> Option<Fixture> {
    if !loop_fs_or_skip(test, "btrfs") {
        return None;
    }
    let fs = LoopFs::new("btrfs", 512);
    let subvol = fs.mount.join("kopano");
    sh("btrfs", &["subvolume", "create", subvol.to_str().unwrap()]);
    let spec = StoreSpec::small(
        Layout::FilesV1 { l1: 10, l2: 20 },
        common::unique_db("snap"),
    );
    let store = generate(common::server(), &subvol.join("store"), &spec).expect("generating");
    let dir = tempfile::Builder::new()
        .prefix("kcbt-snapbackup-")
        .tempdir()
        .unwrap();
    Some(Fixture {
        repo: dir.path().join("repo"),
        fs,
        store,
        dir,
    })
}

impl Fixture {
    /// `.kcbackup-snap-*` subvolumes on the image.
    fn snapshots(&self) -> Vec<String> {
        sh(
            "btrfs",
            &["subvolume", "list", self.fs.mount.to_str().unwrap()],
        )
        .lines()
        .filter(|l| l.contains("kcbackup-snap-"))
        .map(str::to_string)
        .collect()
    }

    /// A snapshot of this run is visible (btrfs puts it next to the subvolume).
    fn snapshot_visible(&self) -> bool {
        fs::read_dir(&self.fs.mount).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".kcbackup-snap-")
            })
        })
    }

    fn config(&self, method: &str, dump: Option<&SlowDump>) -> PathBuf {
        write_config(self.dir.path(), &self.store, &self.repo, method, dump)
    }

    fn assert_nothing_left(&self) {
        assert_eq!(self.snapshots(), Vec::<String>::new(), "snapshot left");
        assert!(!self.snapshot_visible(), "snapshot directory left");
        assert_eq!(snapshot_mounts(), Vec::<String>::new(), "mount left");
        assert_eq!(work_dirs(&self.repo), Vec::<String>::new(), "work dir left");
    }
}

/// Runs a backup whose dump pauses after its transaction began; once
/// `ready` holds (the snapshot exists, or kcbackup stopped itself where its
/// capture begins: `Ready::Capture`), purges the victims from the live
/// tree, checks the dump was still paused, and waits for the end.
fn backup_purging_midway(f: &Fixture, method: &str, ready: Ready) -> (Finished, Vec<Victim>) {
    let dump = SlowDump::new(f.dir.path(), 3);
    let victims = pick_victims(&f.store, 4);
    let config = f.config(method, Some(&dump));
    let mut run = match ready {
        Ready::Snapshot => spawn_backup(&config),
        // Without a snapshot the capture reads the live tree as soon as the
        // transaction is open (`[backup] overlap`): held there, so the purge
        // lands before it reads anything.
        Ready::Capture => spawn_backup_env(&config, &[(PAUSE_ENV, PAUSE_CAPTURE)]),
    };
    let pid = run.child.id();
    run.wait_for("the snapshot point", || match ready {
        Ready::Snapshot => f.snapshot_visible(),
        Ready::Capture => common::is_stopped(pid),
    });
    delete_victims(&f.store, &victims);
    assert!(
        !dump.resumed.exists(),
        "the dump was no longer paused when the files were purged"
    );
    if ready == Ready::Capture {
        run.signal(Signal::SIGCONT);
    }
    let done = run.finish();
    for v in &victims {
        assert!(!f.store.attachment_path.join(&v.rel).exists());
    }
    (done, victims)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    Snapshot,
    Capture,
}

/// The set is complete, holds the purged files, and says it read them from
/// a btrfs snapshot taken right after the dump's transaction began.
fn assert_complete_from_snapshot(f: &Fixture, done: &Finished, victims: &[Victim]) -> i64 {
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let j = &done.json;
    assert_eq!(j["status"], "complete", "{j:#}");
    assert_eq!(at(j, "attachments.missing"), 0, "{j:#}");
    let snap = &j["snapshot"];
    assert_eq!(snap["method"], "btrfs", "{j:#}");
    let set = j["set"].as_str().expect("set id");
    assert_eq!(snap["name"], format!("kcbackup-snap-{set}").as_str());
    assert!(snap["transaction_started"].is_string(), "{snap}");
    assert!(snap["taken_at"].is_string(), "{snap}");
    assert_eq!(snap["fill_percent"], serde_json::Value::Null);
    let window = snap["window_ms"].as_i64().expect("window_ms");
    // Taken before the dump's 3 s pause, so well within it.
    assert!((0..3000).contains(&window), "window {window} ms");
    assert!(
        j["snapshot_note"]
            .as_str()
            .is_some_and(|n| n.starts_with("btrfs snapshot of subvolume")),
        "{j:#}"
    );
    // The dump really was held up around the purge.
    let dump_s = j["phases"][0]["seconds"].as_f64().unwrap_or(0.0);
    assert!(dump_s >= 3.0, "dump took {dump_s} s");

    // The manifest carries the same record.
    let manifest = Manifest::load(&f.repo.join("sets").join(set)).expect("manifest");
    let info = manifest.snapshot.expect("manifest snapshot");
    assert_eq!(info.method, Method::Btrfs);
    assert_eq!(info.window_ms, Some(window));
    assert_eq!(
        info.transaction_started,
        manifest.database.transaction_started
    );
    assert!(manifest.attachments.proof.is_complete());
    assert_victims_captured(&f.repo, set, victims);

    // And verify agrees: every object there, every checksum right.
    let config = f.config("btrfs", None);
    let out = common::kcbackup(&["--config", config.to_str().unwrap(), "verify", set]);
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    f.assert_nothing_left();
    window
}

#[test]
fn btrfs_snapshot_keeps_files_purged_while_the_dump_runs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture("btrfs_snapshot_keeps_files_purged_while_the_dump_runs") else {
        return;
    };
    let (done, victims) = backup_purging_midway(&f, "btrfs", Ready::Snapshot);
    let window = assert_complete_from_snapshot(&f, &done, &victims);
    println!(
        "btrfs: consistency window {window} ms (dump transaction -> snapshot); backup {:.1} s",
        done.seconds
    );
}

#[test]
fn auto_finds_btrfs_and_keeps_files_purged_while_the_dump_runs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture("auto_finds_btrfs_and_keeps_files_purged_while_the_dump_runs") else {
        return;
    };
    let (done, victims) = backup_purging_midway(&f, "auto", Ready::Snapshot);
    let window = assert_complete_from_snapshot(&f, &done, &victims);
    println!("auto (btrfs): consistency window {window} ms");
}

/// The contrast: the very same purge without a snapshot loses the files,
/// and the backup says so. This is what the snapshot is for.
#[test]
fn without_a_snapshot_the_same_purge_makes_the_set_incomplete() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture("without_a_snapshot_the_same_purge_makes_the_set_incomplete") else {
        return;
    };
    let (done, victims) = backup_purging_midway(&f, "none", Ready::Capture);
    assert_eq!(done.code, Some(3), "{}", done.stderr);
    let j = &done.json;
    assert_eq!(j["status"], "incomplete", "{j:#}");
    assert_eq!(j["snapshot"]["method"], "none");
    assert_eq!(j["snapshot"]["window_ms"], serde_json::Value::Null);
    assert_eq!(at(j, "attachments.missing"), victims.len() as u64, "{j:#}");
    let missing: Vec<u64> = at(j, "attachments.missing_ids")
        .as_array()
        .expect("missing_ids")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    let mut want: Vec<u64> = victims.iter().map(|v| v.id as u64).collect();
    want.sort();
    assert_eq!(missing, want);
    assert!(done.stderr.contains("INCOMPLETE"), "{}", done.stderr);
    f.assert_nothing_left();
}

/// The dump's processes of the wrapper at `script` still running.
fn wrapper_processes(script: &Path) -> Vec<String> {
    let needle = script.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push(cmd);
        }
    }
    found
}

#[test]
fn sigterm_during_the_dump_removes_the_snapshot_and_publishes_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture("sigterm_during_the_dump_removes_the_snapshot_and_publishes_nothing")
    else {
        return;
    };
    // A long pause: kcbackup must stop the paused dump, not wait it out.
    let dump = SlowDump::new(f.dir.path(), 30);
    let config = f.config("btrfs", Some(&dump));
    let mut run = spawn_backup(&config);
    run.wait_for("the snapshot", || f.snapshot_visible());
    assert_eq!(f.snapshots().len(), 1);
    let signalled = Instant::now();
    run.signal(Signal::SIGTERM);
    let done = run.finish();
    let stop = signalled.elapsed();
    assert_eq!(done.code, Some(143), "{}", done.stderr);
    assert!(done.stderr.contains("SIGTERM"), "{}", done.stderr);
    println!("stopped {} ms after SIGTERM", stop.as_millis());
    assert!(stop < Duration::from_secs(10), "took {stop:?} to stop");
    assert_eq!(published_sets(&f.repo), Vec::<String>::new());
    f.assert_nothing_left();
    // The wrapper's processes (the whole dump pipeline) are gone too.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(wrapper_processes(&dump.script), Vec::<String>::new());

    // The next backup works as usual and finds nothing to clean up.
    let done = backup(&f.config("btrfs", None));
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.json["status"], "complete");
    assert_eq!(done.json["snapshot"]["method"], "btrfs");
    assert_eq!(done.json["removed_snapshots"], serde_json::json!([]));
    assert_eq!(done.json["removed_leftovers"], serde_json::json!([]));
    f.assert_nothing_left();
}

#[test]
fn a_killed_backup_leaves_a_snapshot_that_the_next_run_removes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = fixture("a_killed_backup_leaves_a_snapshot_that_the_next_run_removes") else {
        return;
    };
    let dump = SlowDump::new(f.dir.path(), 5);
    let mut run = spawn_backup(&f.config("btrfs", Some(&dump)));
    run.wait_for("the snapshot", || f.snapshot_visible());
    run.signal(Signal::SIGKILL); // a crash: no cleanup runs
    let done = run.finish();
    assert_eq!(done.code, None);
    let left = f.snapshots();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(work_dirs(&f.repo).len(), 1);

    let done = backup(&f.config("btrfs", None));
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.json["status"], "complete");
    let removed: Vec<&str> = done.json["removed_snapshots"]
        .as_array()
        .expect("removed_snapshots")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains("/.kcbackup-snap-"), "{removed:?}");
    assert_eq!(
        done.json["removed_leftovers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(published_sets(&f.repo).len(), 1);
    f.assert_nothing_left();
}
