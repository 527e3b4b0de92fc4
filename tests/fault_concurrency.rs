//! Runs against runs on one repository: a backup held in its dump against
//! another backup, verify, restore and drill; verify, restore and drill held
//! (SIGSTOP once /proc/locks shows their lock) against a backup; several
//! backups started at once. Exactly one writer wins, the others exit 1
//! naming the lock, and nothing is damaged.

mod common;
mod faultkit;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use faultkit::{Bg, Fx, HeldDump, Out, V1};
use nix::sys::signal::Signal;

/// Whether process `pid` holds a lock on `<repo>/lock` (per /proc/locks).
fn holds_lock(repo: &Path, pid: u32) -> bool {
    let Ok(meta) = fs::metadata(repo.join("lock")) else {
        return false;
    };
    let inode = format!(":{}", meta.ino());
    fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // `1: FLOCK ADVISORY WRITE 1234 00:2a:5678 0 EOF`
            f.len() >= 6 && f[4] == pid.to_string() && f[5].ends_with(&inode)
        })
}

fn assert_lock_refusal(out: &Out, what: &str) {
    assert_eq!(out.code, Some(1), "{what}: {}", out.stderr);
    let msg = out.assert_one_message(what);
    assert!(msg.contains("lock"), "{what}: {msg}");
}

#[test]
fn a_backup_in_progress_refuses_a_second_backup_and_the_readers() {
    let fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    let mut bg = fx.spawn_with(&config, &["backup", "--json"]);
    assert!(
        bg.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );

    assert_lock_refusal(&fx.run(&["backup", "--json"]), "backup against backup");
    assert_lock_refusal(&fx.verify(&first), "verify against backup");
    let r: Vec<String> = fx.restore_args(&first, "conc0");
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    assert_lock_refusal(&fx.run(&r), "restore against backup");
    assert_lock_refusal(
        &fx.run(&["drill", &first, "--json"]),
        "drill against backup",
    );

    fs::write(&held.release, "").unwrap();
    let out = bg.finish();
    assert_eq!(out.code, Some(0), "the held backup: {}", out.stderr);
    let second = out.set().unwrap();
    fx.assert_verifies(&[first.clone(), second.clone()], "after the refusals");
    fx.assert_recovers(&[first, second], "backup against everything");
}

#[test]
fn verify_restore_and_drill_in_progress_refuse_a_backup() {
    let fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let readers: Vec<(&str, Vec<String>)> = vec![
        (
            "verify",
            vec!["verify".into(), first.clone(), "--json".into()],
        ),
        ("restore", Vec::new()),
        (
            "drill",
            vec!["drill".into(), first.clone(), "--json".into()],
        ),
    ];
    for (i, (name, args)) in readers.into_iter().enumerate() {
        // A quick reader may end between two looks at /proc/locks: again
        // (a restore each time into a database of its own).
        let mut reader = None;
        for attempt in 0..5 {
            let args = if name == "restore" {
                fx.restore_args(&first, &format!("conc{}", 10 * i + attempt))
            } else {
                args.clone()
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut bg = fx.spawn(&args, false);
            let pid = bg.child.id();
            if bg.stop_when(|| holds_lock(&fx.repo, pid)) {
                reader = Some(bg);
                break;
            }
            let done = bg.finish();
            assert_eq!(done.code, Some(0), "{name} itself: {}", done.stderr);
        }
        let reader = reader.unwrap_or_else(|| panic!("{name} was never seen holding the lock"));
        let out = fx.run(&["backup", "--json"]);
        assert_lock_refusal(&out, &format!("backup against {name}"));
        reader.signal(Signal::SIGCONT);
        let done = reader.finish();
        assert_eq!(done.code, Some(0), "{name} itself: {}", done.stderr);
    }
    fx.assert_verifies(std::slice::from_ref(&first), "after the readers");
    fx.assert_recovers(&[first], "readers against a backup");
}

#[test]
fn several_backups_started_at_once_publish_exactly_one_set() {
    let fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    for round in 0..2 {
        held.reset();
        let mut runs: Vec<Bg> = (0..5)
            .map(|_| fx.spawn_with(&config, &["backup", "--json"]))
            .collect();
        // The losers end on their own; the winner waits in its dump until
        // every loser has ended (else a late starter could go next).
        let deadline = std::time::Instant::now() + faultkit::PATIENCE;
        loop {
            let running = runs.iter_mut().map(Bg::is_running).filter(|r| *r).count();
            if held.pausing.exists() && running <= 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: hung");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fs::write(&held.release, "").unwrap();
        let mut published = 0;
        for out in runs.into_iter().map(Bg::finish) {
            match out.code {
                Some(0) => published += 1,
                _ => assert_lock_refusal(&out, &format!("round {round}: simultaneous backup")),
            }
        }
        assert_eq!(published, 1, "round {round}: exactly one backup publishes");
        assert_eq!(fx.sets().len(), 2 + round, "round {round}");
        assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    }
    let sets = fx.sets();
    fx.assert_verifies(&sets, "after simultaneous starts");
    fx.assert_recovers(&[first], "simultaneous backups");
}
