//! Backups of a store a live writer keeps changing (tests/faultkit/writer.rs:
//! deliveries, shared instances, soft deletes, purges), with printed seeds.
//! With a btrfs snapshot an instance may be missing only when the writer
//! unlinked it after the backup started and before the snapshot was taken
//! (the window from the dump's transaction to the snapshot, which Kopano's
//! unlink-before-commit order leaves to any snapshot; counted apart, with
//! the window's length); without a snapshot every missing instance must be one the
//! writer purged during that run. Every complete set verifies and drills
//! (0); an incomplete one verifies and drills with 3.
//! `make test` runs one quick run of each kind; `make test-soak` runs
//! `live_writer_soak` (KCBACKUP_SOAK_RUNS runs of each kind, default 20).
//! Needs root for btrfs on a loop device (the no-snapshot runs go on without).

mod common;
mod faultkit;
mod snapfix;

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use faultkit::writer::LiveWriter;
use faultkit::{Fx, V1};
use serde_json::Value;
use snapfix::{LoopFs, sh};

/// The snapshot lock is host-wide: one snapshot backup of this binary at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Totals over runs, printed at the end.
#[derive(Default, Debug)]
struct Tally {
    runs: u32,
    sets: u32,
    complete: u32,
    incomplete: u32,
    verified: u32,
    drilled: u32,
    missing_purged: u64,
    missing_in_snapshot_window: u64,
    max_window_ms: i64,
    /// Each set and its verify exit code right after its run.
    verdicts: Vec<(String, Option<i32>)>,
    delivered: u32,
    shared: u32,
    purged: usize,
}

struct Bed {
    fx: Fx,
    btrfs: Option<std::path::PathBuf>,
    none: std::path::PathBuf,
    _fs: Option<LoopFs>,
}

/// A store on a btrfs subvolume when loop devices work (else in a temp dir).
fn bed(test: &str) -> Bed {
    let fs = snapfix::loop_fs_or_skip(test, "btrfs").then(|| LoopFs::new("btrfs", 768));
    let fx = match &fs {
        Some(fs) => {
            let subvol = fs.mount.join("kopano");
            sh("btrfs", &["subvolume", "create", subvol.to_str().unwrap()]);
            Fx::new_at(&subvol.join("store"), V1, |_| {})
        }
        None => Fx::new(V1, |_| {}),
    };
    let btrfs = fs
        .as_ref()
        .map(|_| fx.config_snapshot("btrfs", &fx.repo, "btrfs", ""));
    let none = fx.config.clone();
    Bed {
        fx,
        btrfs,
        none,
        _fs: fs,
    }
}

fn time(v: &Value, path: &str) -> Option<DateTime<Utc>> {
    let mut at = v;
    for k in path.split('.') {
        at = &at[k];
    }
    at.as_str()?.parse().ok()
}

/// One run: a writer with `seed`, one backup while it writes, the checks.
fn one_run(bed: &Bed, snapshot: bool, seed: u64, tally: &mut Tally) {
    let fx = &bed.fx;
    let config = if snapshot {
        bed.btrfs.as_ref().unwrap()
    } else {
        &bed.none
    };
    let kind = if snapshot { "btrfs" } else { "none" };
    let writer = LiveWriter::start(&fx.store, common::server().socket(), seed);
    // Let it get going: some messages soft-deleted, ready to be purged.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (out, from, to) = loop {
        let _one = snapshot.then(|| ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()));
        let from = Utc::now();
        let out = fx.run_with(config, &["backup", "--json"]);
        let to = Utc::now();
        // Another test binary may hold the host's snapshot lock: wait.
        if out.code == Some(1) && out.stderr.contains("holds a snapshot") {
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        }
        break (out, from, to);
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = writer.stop();
    let what = format!("run seed={seed} snapshot={kind}");
    let j = out.json();
    assert!(
        matches!(out.code, Some(0) | Some(3)),
        "{what}: backup exit {:?}: {}",
        out.code,
        out.stderr
    );
    let set = out.set().expect("a set");
    let missing: Vec<u32> = j["attachments"]["missing_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    let purged = log.unlinked_between(from, to);
    let taken = time(&j, "snapshot.taken_at");
    let window_ms = j["snapshot"]["window_ms"].as_i64().unwrap_or(0);
    let mut in_window = 0;
    for id in &missing {
        if snapshot {
            let t = taken.expect("a snapshot time with a snapshot");
            let purges: Vec<_> = log.purges.iter().filter(|p| p.instance == *id).collect();
            assert!(
                log.in_window(*id, from, t),
                "{what}: instance {id} missing with a snapshot taken at {t} \
                 (window {window_ms} ms); purges {purges:?}"
            );
            in_window += 1;
        } else {
            assert!(
                purged.contains(id),
                "{what}: instance {id} is missing and the writer did not purge it during the run"
            );
        }
    }
    assert_eq!(
        out.code == Some(0),
        missing.is_empty(),
        "{what}: exit vs missing: {}\n{}",
        out.stderr,
        serde_json::to_string_pretty(&j["attachments"]["missing"]).unwrap_or_default()
    );
    println!(
        "{what}: set {set} exit {:?}, {} delivered, {} shared, {} soft-deleted, {} unlinked \
         ({} during the backup), snapshot window {window_ms} ms, missing {} \
         ({} purged during the run, {} unlinked inside the snapshot window)",
        out.code,
        log.delivered,
        log.shared,
        log.soft_deleted,
        log.purges.len(),
        purged.len(),
        missing.len(),
        missing.len() - in_window,
        in_window
    );
    tally.runs += 1;
    tally.sets += 1;
    tally.delivered += log.delivered;
    tally.shared += log.shared;
    tally.purged += log.purges.len();
    if snapshot {
        tally.missing_in_snapshot_window += in_window as u64;
        tally.max_window_ms = tally.max_window_ms.max(window_ms);
    } else {
        tally.missing_purged += missing.len() as u64;
    }
    // The set: verify and drill when complete; verify names the missing ones otherwise.
    let v = fx.verify(&set);
    tally.verdicts.push((set.clone(), v.code));
    if missing.is_empty() {
        tally.complete += 1;
        assert_eq!(v.code, Some(0), "{what}: verify: {}{}", v.stdout, v.stderr);
        tally.verified += 1;
        let d = fx.run(&["drill", &set, "--json"]);
        assert_eq!(d.code, Some(0), "{what}: drill: {}{}", d.stdout, d.stderr);
        tally.drilled += 1;
    } else {
        tally.incomplete += 1;
        assert_eq!(v.code, Some(3), "{what}: verify of an incomplete set");
        // A drill of an incomplete set restores it and names what is missing.
        let d = fx.run(&["drill", &set, "--json"]);
        assert_eq!(
            d.code,
            Some(3),
            "{what}: drill of an incomplete set: {}",
            d.stderr
        );
        tally.drilled += 1;
    }
    let left = fx.leftovers();
    assert!(left.is_empty(), "{what}: left behind: {left:?}");
}

fn runs(test: &str, per_kind: u32, base_seed: u64) {
    let bed = bed(test);
    let mut tally = Tally::default();
    for i in 0..per_kind {
        let seed = base_seed + i as u64;
        if bed.btrfs.is_some() {
            one_run(&bed, true, seed, &mut tally);
        }
        one_run(&bed, false, seed + 10_000, &mut tally);
    }
    // Later backups left earlier sets as they were: verify again (every
    // fourth set and the last) gives the code it gave right after its run.
    let n = tally.verdicts.len();
    for (i, (set, code)) in tally.verdicts.iter().enumerate() {
        if i % 4 == 0 || i + 1 == n {
            let v = bed.fx.verify(set);
            assert_eq!(v.code, *code, "{set} verified again: {}", v.stderr);
        }
    }
    tally.verdicts.clear();
    println!("{test}: {tally:?}");
}

fn seed_from_env(default: u64) -> u64 {
    std::env::var("KCBACKUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn live_writer_quick() {
    let seed = seed_from_env(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 100_000,
    );
    println!("live_writer_quick: base seed {seed} (rerun with KCBACKUP_SEED={seed})");
    runs("live_writer_quick", 1, seed);
}

#[test]
#[ignore = "soak: make test-soak"]
fn live_writer_soak() {
    let per_kind = std::env::var("KCBACKUP_SOAK_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed_from_env(1);
    println!("live_writer_soak: base seed {seed}, {per_kind} runs of each kind");
    runs("live_writer_soak", per_kind, seed);
}
