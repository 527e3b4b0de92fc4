//! `kcbackup prune` and `kcbackup forget` against real backups of a
//! generated store in the shared MariaDB: several nights with new and
//! purged attachments, then prune; the repository shrinks, every remaining
//! set verifies (the newest drills), objects only removed sets referenced
//! are gone and all others present. Forget, `--force`, damaged sets,
//! `--dry-run`, a prune without rules, and `--lock-wait` on prune and backup.

mod common;
mod faultkit;
mod prunekit;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use faultkit::{Fx, HeldDump, V1};
use kcbackup::generator::add_attachments;
use kcbackup::metrics::tree_bytes;
use kcbackup::repo::manifest::Manifest;
use nix::sys::signal::Signal;
use prunekit::{assert_store_is_exactly_live, purge, references, stored, trash, union};
use serde_json::Value;

/// A night: new messages, some purged, a backup; returns the set.
fn night(fx: &mut Fx, seed: u64) -> String {
    add_attachments(common::server(), &mut fx.store, 12, seed).expect("adding messages");
    purge(fx, 4);
    fx.backup_ok()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// `(id, action, reasons)` of every set in a prune report.
fn verdicts(report: &Value) -> Vec<(String, String, Vec<String>)> {
    report["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["action"].as_str().unwrap().to_owned(),
                strings(&v["reasons"]),
            )
        })
        .collect()
}

#[test]
fn prune_removes_old_sets_and_exactly_the_objects_only_they_referenced() {
    let mut fx = Fx::new(V1, |_| {});
    let mut sets = vec![fx.backup_ok()];
    for seed in 1..=3 {
        sets.push(night(&mut fx, seed));
    }
    let refs = references(&fx.repo);
    let (gone, kept) = sets.split_at(2);
    let live = union(&refs, kept);
    let dead: Vec<String> = union(&refs, gone).difference(&live).cloned().collect();
    assert!(
        !dead.is_empty(),
        "the purges left no object only old sets reference"
    );
    // A drill report of a set that will go, written as drill writes them.
    let drills = fx.repo.join("drills");
    fs::create_dir_all(&drills).unwrap();
    let report = drills.join(format!("{}--20261201T000000.000Z.json", sets[0]));
    fs::write(&report, "{}").unwrap();
    // A quarantined object (moved aside by verify): prune keeps it.
    let corrupt = fx.repo.join("objects/.corrupt");
    fs::create_dir_all(&corrupt).unwrap();
    let quarantined = corrupt.join(format!("{}.zst", "ab".repeat(32)));
    fs::write(&quarantined, "x").unwrap();
    let before = tree_bytes(&fx.repo);

    // --dry-run: the verdicts with reasons, and nothing changes.
    let dry = fx.run(&["prune", "--keep-last", "2", "--dry-run", "--json"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let d = dry.json();
    assert_eq!(d["dry_run"], true);
    assert_eq!(
        verdicts(&d),
        vec![
            (sets[0].clone(), "remove".into(), vec![]),
            (sets[1].clone(), "remove".into(), vec![]),
            (sets[2].clone(), "keep".into(), vec!["last".into()]),
            (sets[3].clone(), "keep".into(), vec!["last".into()]),
        ]
    );
    assert_eq!(d["objects_deleted"], dead.len() as u64, "{d:#}");
    assert_eq!(fx.sets(), sets, "a dry run removes nothing");
    assert_eq!(tree_bytes(&fx.repo), before);
    // The human form names each set with its verdict.
    let human = fx.run(&["prune", "--keep-last", "2", "--dry-run"]);
    assert!(
        human.stdout.contains(&format!("remove {}", sets[0])),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("would remove 2 set(s)"),
        "{}",
        human.stdout
    );

    let out = fx.run(&["prune", "--keep-last", "2", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = out.json();
    assert_eq!(strings(&r["sets_removed"]), gone);
    assert_eq!(r["objects_deleted"], dead.len() as u64, "{r:#}");
    assert_eq!(r["drill_reports_removed"], 1);
    assert_eq!(r["quarantined_objects"], 1);
    assert!(quarantined.exists(), "prune deleted a quarantined object");
    assert!(r["seconds"].as_f64().is_some());
    assert_eq!(fx.sets(), kept);
    let after = tree_bytes(&fx.repo);
    assert!(
        after < before,
        "the repository did not shrink: {before} -> {after}"
    );
    assert_eq!(
        r["bytes_reclaimed"].as_u64().unwrap(),
        before - after - 2, // the two bytes of the drill report
        "{r:#}"
    );
    let have = stored(&fx.repo);
    for sha in &dead {
        assert!(
            !have.contains(sha),
            "object {sha} only removed sets referenced is still there"
        );
    }
    for sha in &live {
        assert!(
            have.contains(sha),
            "object {sha} a kept set references is gone"
        );
    }
    assert_store_is_exactly_live(&fx.repo, "after prune");
    assert!(trash(&fx.repo).is_empty());
    assert!(!report.exists(), "the drill report of a removed set stays");
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    fx.assert_verifies(kept, "after prune");
    let drill = fx.run(&["drill", &kept[1], "--json"]);
    assert_eq!(drill.code, Some(0), "drill after prune: {}", drill.stderr);

    // Again: nothing left to do.
    let again = fx.run(&["prune", "--keep-last", "2", "--json"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.json()["objects_deleted"], 0);
    assert_eq!(strings(&again.json()["sets_removed"]), Vec::<String>::new());
}

#[test]
fn forget_removes_named_sets_and_the_newest_complete_needs_force() {
    let mut fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let second = night(&mut fx, 7);
    let refs = references(&fx.repo);

    let out = fx.run(&["forget", &second]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let msg = out.assert_one_message("forget newest");
    assert!(
        msg.contains("newest complete") && msg.contains("--force"),
        "{msg}"
    );
    let out = fx.run(&["forget", "latest"]);
    assert_eq!(
        out.code,
        Some(2),
        "`latest` is the newest complete set: {}",
        out.stderr
    );
    let out = fx.run(&["forget", "20200101T000000Z"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(fx.sets(), vec![first.clone(), second.clone()]);

    let only_first = refs[&first].difference(&refs[&second]).count() as u64;
    let dry = fx.run(&["forget", &first, "--dry-run", "--json"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(dry.json()["objects_deleted"], only_first);
    assert_eq!(
        fx.sets(),
        vec![first.clone(), second.clone()],
        "a dry run removes nothing"
    );

    let out = fx.run(&["forget", &first, "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(strings(&out.json()["sets_removed"]), vec![first.clone()]);
    assert!(only_first > 0);
    assert_eq!(out.json()["objects_deleted"], only_first);
    assert_eq!(fx.sets(), vec![second.clone()]);
    assert_store_is_exactly_live(&fx.repo, "after forget");
    fx.assert_verifies(std::slice::from_ref(&second), "after forget");

    let out = fx.run(&["forget", &second, "--force", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(fx.sets().is_empty());
    assert!(stored(&fx.repo).is_empty(), "objects of no set remain");
}

#[test]
fn a_damaged_set_is_kept_and_stops_the_sweep_until_it_is_forgotten() {
    let mut fx = Fx::new(V1, |_| {});
    let mut sets = vec![fx.backup_ok()];
    sets.push(night(&mut fx, 11));
    sets.push(night(&mut fx, 12));
    // The middle set's manifest no longer matches its checksum.
    let manifest = fx.set_dir(&sets[1]).join("manifest.json");
    let mut text = fs::read_to_string(&manifest).unwrap();
    text = text.replacen("\"format\"", " \"format\"", 1);
    fs::write(&manifest, text).unwrap();
    let objects = stored(&fx.repo);

    let out = fx.run(&["prune", "--keep-last", "1", "--json"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let r = out.json();
    assert_eq!(strings(&r["sets_removed"]), vec![sets[0].clone()]);
    let skipped = r["sweep_skipped"].as_str().expect("sweep_skipped");
    assert!(
        skipped.contains(&sets[1]) && skipped.contains("damaged"),
        "{skipped}"
    );
    assert!(
        out.stderr.contains(skipped),
        "said on stderr: {}",
        out.stderr
    );
    assert_eq!(r["objects_deleted"], 0);
    assert_eq!(stored(&fx.repo), objects, "no object deleted on a guess");
    assert_eq!(fx.sets(), sets[1..].to_vec(), "the damaged set stays");
    assert!(
        trash(&fx.repo).is_empty(),
        "the removed set's files are gone"
    );
    let (_, action, reasons) = verdicts(&r).remove(1);
    assert_eq!(
        (action.as_str(), reasons),
        ("keep", vec!["damaged: only forget removes it".to_owned()])
    );

    let out = fx.run(&["forget", &sets[1], "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.json()["objects_deleted"].as_u64().unwrap() > 0);
    assert_store_is_exactly_live(&fx.repo, "after forgetting the damaged set");
    fx.assert_verifies(&sets[2..], "after forgetting the damaged set");
}

#[test]
fn a_prune_without_any_rule_is_refused_and_retention_defaults_apply() {
    let fx = Fx::new(V1, |_| {});
    let set = fx.backup_ok();
    let out = fx.run(&["prune", "--keep-daily", "0"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.assert_one_message("no rule")
            .contains("at least one rule")
    );
    let none = fx.config_with(
        "norules",
        &fx.repo,
        "\n[retention]\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\nkeep_tags = []\n",
    );
    let out = fx.run_with(&none, &["prune"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let bad = fx.config_with("bad", &fx.repo, "\n[retention]\nkeep_within = \"soon\"\n");
    let out = fx.run_with(&bad, &["prune", "--dry-run"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("keep_within"), "{}", out.stderr);
    // No rule on the command line: [retention]'s defaults.
    let out = fx.run(&["prune", "--dry-run", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        strings(&out.json()["rules"]),
        ["daily 7", "weekly 4", "monthly 6", "tag pre-upgrade"]
    );
    assert_eq!(out.json()["time_zone"], "local");
    let (_, action, reasons) = verdicts(&out.json()).remove(0);
    assert_eq!(action, "keep");
    assert_eq!(reasons, ["daily", "weekly", "monthly"]);
    let out = fx.run(&[
        "prune",
        "--utc",
        "--keep-hourly",
        "1",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["time_zone"], "utc");
    assert_eq!(
        strings(&out.json()["rules"]),
        ["hourly 1"],
        "the command line replaces [retention]"
    );
    assert_eq!(fx.sets(), vec![set]);
}

#[test]
fn prune_with_lock_wait_waits_for_a_backup_and_backup_for_a_prune() {
    let fx = Fx::new(V1, |_| {});
    let held = HeldDump::new(fx.dir.path());
    let held_config = fx.config_with("held", &fx.repo, &held.toml());
    let first = fx.backup_ok();

    held.reset();
    let mut backup = fx.spawn_with(&held_config, &["backup", "--json"]);
    assert!(
        backup.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );
    let refused = fx.run(&["prune", "--keep-last", "1"]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let msg = refused.assert_one_message("prune while a backup runs");
    assert!(
        msg.contains(&format!("backup, pid {}", backup.child.id())),
        "names the holder: {msg}"
    );
    let mut prune = Logged::spawn(
        &fx,
        &["prune", "--keep-last", "1", "--lock-wait", "120", "--json"],
        None,
    );
    // It waits (and says for whom) while the backup holds the lock...
    prune.wait_for_log("waiting up to 120s for the repository lock (held by backup");
    fs::write(&held.release, "").unwrap();
    let backed = backup.finish();
    assert_eq!(backed.code, Some(0), "{}", backed.stderr);
    let second = backed.set().expect("a set");
    // ... then runs, and sees the backup's set as the newest.
    let (code, stdout) = prune.finish();
    assert_eq!(code, Some(0), "{}", prune.log());
    let report: Value = serde_json::from_str(&stdout).expect("prune's JSON");
    assert_eq!(strings(&report["sets_removed"]), vec![first]);
    assert_eq!(fx.sets(), vec![second.clone()]);

    // A prune stopped while it holds the lock: backup fails at once naming
    // it, or with --lock-wait waits for it.
    let mut paused = Logged::spawn(&fx, &["prune", "--keep-last", "1"], Some("locked"));
    paused.wait_until(common::is_stopped, "prune never paused");
    let refused = fx.run(&["backup"]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let msg = refused.assert_one_message("backup while a prune runs");
    assert!(
        msg.contains(&format!("prune, pid {}", paused.child.id())),
        "{msg}"
    );
    let mut waiting = Logged::spawn(&fx, &["backup", "--lock-wait", "120", "--json"], None);
    waiting.wait_for_log("waiting up to 120s for the repository lock (held by prune");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(paused.child.id() as i32),
        Signal::SIGCONT,
    );
    assert_eq!(paused.finish().0, Some(0), "{}", paused.log());
    let (code, _) = waiting.finish();
    assert_eq!(code, Some(0), "{}", waiting.log());
    assert_eq!(fx.sets().len(), 2);
    fx.assert_verifies(&fx.sets(), "after waiting");
}

/// A run whose stderr goes to a file the test can read while it runs.
struct Logged {
    child: std::process::Child,
    log: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Logged {
    fn spawn(fx: &Fx, args: &[&str], pause_at: Option<&str>) -> Logged {
        let n = faultkit::names(fx.dir.path()).len();
        let log = fx.dir.path().join(format!("run-{n}.err"));
        let out = fx.dir.path().join(format!("run-{n}.out"));
        let mut cmd = fx.command(&fx.config, args);
        if let Some(point) = pause_at {
            cmd.env(kcbackup::commands::prune::PAUSE_ENV, point);
        }
        let child = cmd
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting kcbackup");
        Logged { child, log, out }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until(&mut self, mut cond: impl FnMut(u32) -> bool, what: &str) {
        let deadline = std::time::Instant::now() + faultkit::PATIENCE;
        while !cond(self.child.id()) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "{what}: it ended: {}",
                self.log()
            );
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_for_log(&mut self, text: &str) {
        let log = self.log.clone();
        self.wait_until(
            |_| fs::read_to_string(&log).is_ok_and(|l| l.contains(text)),
            &format!("never logged {text:?}"),
        );
    }

    /// Exit code and stdout.
    fn finish(&mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait");
        (
            status.code(),
            fs::read_to_string(&self.out).unwrap_or_default(),
        )
    }
}

#[test]
fn an_incomplete_set_keeps_its_objects_until_three_newer_complete_sets_exist() {
    let mut fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    // One referenced file missing: the next set is published incomplete.
    let (_, info) = fx.store.expected.instances.iter().next_back().unwrap();
    let file = fx.store.attachment_path.join(info.path.clone().unwrap());
    let aside = file.with_extension("aside");
    fs::rename(&file, &aside).unwrap();
    let out = fx.run(&["backup", "--json"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let incomplete = out.set().expect("an incomplete set");
    fs::rename(&aside, &file).unwrap();
    purge(&mut fx, 3);
    let complete = fx.backup_ok();
    let refs = references(&fx.repo);
    // The attachments purged since the first set (its dump chunks differ
    // from the others' too, and are nobody else's: they go at once).
    let chunks = |set: &str| -> BTreeSet<String> {
        let dir = fx.set_dir(set);
        let m = Manifest::load(&dir).unwrap();
        kcbackup::repo::chunk_list::read_all(&dir, &m)
            .unwrap()
            .into_iter()
            .map(|c| c.sha256)
            .collect()
    };
    let first_chunks = chunks(&first);
    let purged: Vec<&String> = refs[&first]
        .difference(&refs[&complete])
        .filter(|sha| !first_chunks.contains(*sha))
        .collect();
    assert!(!purged.is_empty());
    let only_first = refs[&first]
        .iter()
        .filter(|sha| !refs[&incomplete].contains(*sha) && !refs[&complete].contains(*sha))
        .count();
    assert!(
        purged.iter().all(|sha| refs[&incomplete].contains(*sha)),
        "the incomplete set holds the purged attachments too"
    );

    let out = fx.run(&["prune", "--keep-last", "1", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        verdicts(&out.json()),
        vec![
            (first.clone(), "remove".into(), vec![]),
            (
                incomplete.clone(),
                "keep".into(),
                vec!["incomplete: 1 of 3 newer complete sets".into()]
            ),
            (complete.clone(), "keep".into(), vec!["last".into()]),
        ]
    );
    // The purged attachments stay: the incomplete set references them.
    assert_eq!(out.json()["objects_deleted"], only_first as u64);
    let stored_now = stored(&fx.repo);
    assert!(purged.iter().all(|sha| stored_now.contains(*sha)));
    assert_store_is_exactly_live(&fx.repo, "incomplete set kept");
    fx.assert_verifies(std::slice::from_ref(&complete), "incomplete set kept");

    let newer = [fx.backup_ok(), fx.backup_ok()];
    let refs = references(&fx.repo);
    let going: BTreeSet<&String> = [&incomplete, &complete, &newer[0]]
        .into_iter()
        .flat_map(|set| refs[set].iter())
        .filter(|sha| !refs[&newer[1]].contains(*sha))
        .collect();
    assert!(purged.iter().all(|sha| going.contains(*sha)));
    let out = fx.run(&["prune", "--keep-last", "1", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        strings(&out.json()["sets_removed"]),
        vec![incomplete, complete, newer[0].clone()]
    );
    assert_eq!(fx.sets(), vec![newer[1].clone()]);
    assert_eq!(out.json()["objects_deleted"], going.len() as u64);
    assert_store_is_exactly_live(&fx.repo, "incomplete set removed");
    fx.assert_verifies(&newer[1..], "incomplete set removed");
}
