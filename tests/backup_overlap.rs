//! `[backup] overlap`: the attachment capture runs alongside the dump once
//! the dump's transaction is open, and reports what a capture after the
//! dump reports: a file purged after the transaction began and before the
//! capture read it is missing either way, a file written meanwhile is an
//! extra. The real dump (held up 3 s by a wrapper), the real tree, no
//! snapshot. `KCBACKUP_TEST_PAUSE_AT=capture` stops kcbackup where the
//! capture begins, so the test's purge lands exactly there in both modes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::snapbackup::{
    Finished, Running, SlowDump, at, delete_victims, pick_victims, published_sets, spawn_backup,
    spawn_backup_env, work_dirs, write_config,
};
use kcbackup::commands::backup::PAUSE_CAPTURE;
use kcbackup::generator::GeneratedStore;
use kcbackup::layout::Layout;
use kcbackup::signals::PAUSE_ENV;
use nix::sys::signal::Signal;
use serde_json::Value;

struct Fixture {
    _store_dir: tempfile::TempDir,
    store: GeneratedStore,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let (store_dir, store) = common::new_store(Layout::FilesV1 { l1: 10, l2: 20 }, |_| {});
        Fixture {
            _store_dir: store_dir,
            store,
            dir: tempfile::Builder::new()
                .prefix("kcbt-overlap-")
                .tempdir()
                .unwrap(),
        }
    }

    fn repo(&self, overlap: bool) -> PathBuf {
        self.dir.path().join(format!("repo-{overlap}"))
    }

    /// A config whose dump pauses 3 s after its first 64 KiB (the
    /// transaction is open by then), with `[backup] overlap` as given.
    fn config(&self, overlap: bool, dump: &SlowDump) -> PathBuf {
        let written = write_config(
            self.dir.path(),
            &self.store,
            &self.repo(overlap),
            "none",
            Some(dump),
        );
        let mut text = fs::read_to_string(&written).unwrap();
        text.push_str(&format!("\n[backup]\noverlap = {overlap}\n"));
        let path = self.dir.path().join(format!("overlap-{overlap}.toml"));
        fs::write(&path, text).unwrap();
        path
    }

    /// A backup stopped where its capture begins: `act` runs there, then
    /// it goes on to its end.
    fn backup_acting_at_capture(&self, overlap: bool, act: impl FnOnce()) -> Finished {
        let dump = SlowDump::new(self.dir.path(), 3);
        let config = self.config(overlap, &dump);
        let mut run = spawn_paused_at_capture(&config);
        let pid = run.child.id();
        run.wait_for("the capture's start", || common::is_stopped(pid));
        // Alongside the dump, the capture begins while the dump is held
        // up; after it, only once the dump is done.
        assert_eq!(
            dump.resumed.exists(),
            !overlap,
            "overlap = {overlap}: where in the dump the capture began"
        );
        act();
        run.signal(Signal::SIGCONT);
        run.finish()
    }
}

fn spawn_paused_at_capture(config: &Path) -> Running {
    spawn_backup_env(config, &[(PAUSE_ENV, PAUSE_CAPTURE)])
}

fn phase<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["phases"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no phase {name}: {j:#}"))
}

fn missing_ids(j: &Value) -> Vec<u64> {
    at(j, "attachments.missing_ids")
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn a_file_purged_before_the_capture_read_it_is_missing_with_and_without_overlap() {
    let f = Fixture::new();
    let victims = pick_victims(&f.store, 3);
    let mut want: Vec<u64> = victims.iter().map(|v| v.id as u64).collect();
    want.sort();
    let mut reported = Vec::new();
    for overlap in [true, false] {
        let done = f.backup_acting_at_capture(overlap, || {
            // The first run purges them; the second finds them gone already.
            if overlap {
                delete_victims(&f.store, &victims);
            }
        });
        assert_eq!(done.code, Some(3), "overlap = {overlap}: {}", done.stderr);
        let j = &done.json;
        assert_eq!(j["status"], "incomplete", "{j:#}");
        assert_eq!(missing_ids(j), want, "overlap = {overlap}: {j:#}");
        let proof = [
            "referenced",
            "present",
            "missing",
            "missing_ids",
            "extra",
            "leftovers",
        ]
        .map(|key| j["attachments"][key].clone());
        reported.push((proof, j["attachments"]["capture"]["files"].clone()));
    }
    // Exactly as before: the same proof and the same files captured.
    assert_eq!(reported[0], reported[1]);
}

#[test]
fn a_file_written_during_the_dump_is_an_extra() {
    let f = Fixture::new();
    let extras_before = f.store.expected.extra_files.len() as u64;
    // An instance id the database does not know, where files_v1 puts it.
    let id = 4_000_000u32;
    let rel = Layout::v1_dir(10, 20, id).join(id.to_string());
    let path = f.store.attachment_path.join(&rel);
    let done = f.backup_acting_at_capture(true, || {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"written while the dump streams").unwrap();
    });
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let j = &done.json;
    assert_eq!(j["status"], "complete", "{j:#}");
    assert_eq!(
        at(j, "attachments.extra").as_u64(),
        Some(extras_before + 1),
        "{j:#}"
    );
}

/// The manifest's phases say the capture ran alongside the dump: it began
/// before the dump ended (held up 3 s, so the order is certain). With
/// overlap off it begins after the dump's end.
#[test]
fn phases_show_the_capture_alongside_the_dump_or_after_it() {
    let f = Fixture::new();
    for overlap in [true, false] {
        let dump = SlowDump::new(f.dir.path(), 3);
        let done = spawn_backup(&f.config(overlap, &dump)).finish();
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        let j = &done.json;
        let dump_phase = phase(j, "dump");
        let capture = phase(j, "attachments");
        let dump_end =
            dump_phase["started_s"].as_f64().unwrap() + dump_phase["seconds"].as_f64().unwrap();
        let capture_start = capture["started_s"].as_f64().unwrap();
        assert!(
            dump_phase["started_s"].as_f64().unwrap() <= capture_start,
            "{j:#}"
        );
        assert_eq!(
            capture_start < dump_end,
            overlap,
            "overlap = {overlap}: capture began at {capture_start} s, the dump ended at {dump_end} s"
        );
        assert_eq!(published_sets(&f.repo(overlap)).len(), 1);
    }
}

/// A dump that fails while the capture runs beside it: exit 1, nothing
/// published, no work directory left, the capture stopped with it.
#[test]
fn a_dump_failing_alongside_the_capture_publishes_nothing() {
    let f = Fixture::new();
    let script = f.dir.path().join("failing-dump");
    let marker = f.dir.path().join("dump-failing");
    fs::write(
        &script,
        format!(
            "#!/bin/bash\nset -o pipefail\nmariadb-dump \"$@\" | {{ head -c 65536; \
             : > '{}'; sleep 2; exit 1; }}\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let repo = f.repo(true);
    let mut text = f.store.tool_config(&repo, "none");
    let quoted = toml::Value::String(script.display().to_string());
    text.push_str(&format!("\n[mysql]\ndump_command = {quoted}\n"));
    let config = f.dir.path().join("failing.toml");
    fs::write(&config, text).unwrap();
    let done = spawn_backup(&config).finish();
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(marker.exists());
    assert!(
        done.stderr.contains("the database dump failed"),
        "{}",
        done.stderr
    );
    assert!(published_sets(&repo).is_empty());
    // The next run clears what this one left, and succeeds.
    let config_ok = f.dir.path().join("ok.toml");
    fs::write(&config_ok, f.store.tool_config(&repo, "none")).unwrap();
    let again = spawn_backup(&config_ok).finish();
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(work_dirs(&repo), Vec::<String>::new());
}

/// SIGTERM while the capture runs beside the paused dump: exit 143,
/// nothing published, nothing left running.
#[test]
fn sigterm_while_both_halves_run_publishes_nothing() {
    let f = Fixture::new();
    let dump = SlowDump::new(f.dir.path(), 30);
    let config = f.config(true, &dump);
    let mut run = spawn_paused_at_capture(&config);
    let pid = run.child.id();
    run.wait_for("the capture's start", || common::is_stopped(pid));
    run.signal(Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(200));
    run.signal(Signal::SIGTERM);
    let done = run.finish();
    assert_eq!(done.code, Some(143), "{}", done.stderr);
    assert!(!dump.resumed.exists(), "the dump ran on after the signal");
    assert!(published_sets(&f.repo(true)).is_empty());
    assert_eq!(work_dirs(&f.repo(true)), Vec::<String>::new());
}
