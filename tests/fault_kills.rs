//! Kills and signals against real runs: SIGKILL of `kcbackup backup` at
//! points chosen by events seen from outside (the repository and /proc
//! polled in a tight loop, the run frozen with SIGSTOP the moment the event
//! shows) and at timed points; of the dump child alone; of the process
//! group; SIGTERM/SIGINT/SIGHUP during dump, capture and publish; SIGKILL of
//! verify and restore. After each: nothing half-written published, the
//! next backup exits 0 and leaves nothing behind, earlier sets verify.

mod common;
mod faultkit;

use std::fs;
use std::time::Duration;

use faultkit::{Fx, HeldDump, V1, dump_pids, names, object_count, work_dir, work_file_len};
use kcbackup::generator::add_attachments;
use nix::sys::signal::Signal;

/// New messages before each case, so every backup has objects to write.
const NEW_PER_CASE: u32 = 25;

/// Where a backup can be caught, as the repository and /proc show it.
#[derive(Debug, Clone, Copy)]
enum Point {
    WorkDir,
    CredentialDir,
    DumpStarted,
    DumpChunkStaged,
    DumpChunkStored,
    ReferencesWritten,
    LobListWritten,
    FirstTemporaryObject,
    FirstObject,
    HalfTheObjects,
    IndexCreated,
    IndexWritten,
    ConfigArchiveCreated,
    ConfigArchiveWritten,
    ManifestWritten,
    ManifestChecksumWritten,
    Published,
    AfterMs(u64),
}

fn reached(fx: &Fx, p: Point, objects_before: usize, sets_before: usize, bg_ms: u128) -> bool {
    let repo = &fx.repo;
    let nonempty = |name: &str| work_file_len(repo, name).is_some_and(|n| n > 0);
    match p {
        Point::WorkDir => work_dir(repo).is_some(),
        Point::CredentialDir => names(&fx.tmp)
            .iter()
            .any(|n| n.starts_with("kcbackup-cred-")),
        Point::DumpStarted => !dump_pids(&fx.tmp).is_empty(),
        // The dump goes into the object store as chunks: the first one
        // staged, then the first one stored (the attachments' come later).
        Point::DumpChunkStaged => !names(&repo.join("objects/.tmp")).is_empty(),
        Point::DumpChunkStored => object_count(repo) > objects_before,
        Point::ReferencesWritten => nonempty("singleinstances.jsonl.zst"),
        Point::LobListWritten => nonempty("lob.jsonl.zst"),
        Point::FirstTemporaryObject => !names(&repo.join("objects/.tmp")).is_empty(),
        Point::FirstObject => object_count(repo) > objects_before,
        Point::HalfTheObjects => object_count(repo) >= objects_before + NEW_PER_CASE as usize / 2,
        Point::IndexCreated => work_file_len(repo, "attachments.jsonl.zst").is_some(),
        Point::IndexWritten => nonempty("attachments.jsonl.zst"),
        Point::ConfigArchiveCreated => work_file_len(repo, "config.tar.zst").is_some(),
        Point::ConfigArchiveWritten => nonempty("config.tar.zst"),
        Point::ManifestWritten => work_file_len(repo, "manifest.json").is_some(),
        Point::ManifestChecksumWritten => work_file_len(repo, "manifest.json.sha256").is_some(),
        Point::Published => fx.sets().len() > sets_before,
        Point::AfterMs(ms) => bg_ms >= ms as u128,
    }
}

/// What the repository showed when the run was frozen: the files of its
/// work directory (or "published").
fn where_it_was(fx: &Fx, sets_before: usize) -> String {
    if fx.sets().len() > sets_before {
        return "published".into();
    }
    match work_dir(&fx.repo) {
        None => "no work dir yet".into(),
        Some(dir) => {
            let mut files = names(&dir);
            files.sort();
            format!("work dir [{}]", files.join(" "))
        }
    }
}

#[test]
fn sigkill_of_backup_at_events_and_times_then_the_next_backup_cleans_up() {
    let mut fx = Fx::new(V1, |_| {});
    let mut sets = vec![fx.backup_ok()];
    let points = [
        Point::WorkDir,
        Point::CredentialDir,
        Point::DumpStarted,
        Point::DumpChunkStaged,
        Point::DumpChunkStored,
        Point::ReferencesWritten,
        Point::LobListWritten,
        Point::FirstTemporaryObject,
        Point::FirstObject,
        Point::HalfTheObjects,
        Point::IndexCreated,
        Point::IndexWritten,
        Point::ConfigArchiveCreated,
        Point::ConfigArchiveWritten,
        Point::ManifestWritten,
        Point::ManifestChecksumWritten,
        Point::Published,
        Point::AfterMs(20),
        Point::AfterMs(120),
        Point::AfterMs(400),
        Point::AfterMs(900),
    ];
    let mut caught = Vec::new();
    for (i, point) in points.iter().enumerate() {
        add_attachments(
            common::server(),
            &mut fx.store,
            NEW_PER_CASE,
            1000 + i as u64,
        )
        .expect("adding messages");
        let objects_before = object_count(&fx.repo);
        let sets_before = fx.sets().len();
        let mut bg = fx.spawn(&["backup", "--json"], false);
        let started = bg.started;
        let hit = bg.stop_when(|| {
            reached(
                &fx,
                *point,
                objects_before,
                sets_before,
                started.elapsed().as_millis(),
            )
        });
        let at = where_it_was(&fx, sets_before);
        bg.signal(Signal::SIGKILL);
        let out = bg.finish();
        let what = format!("SIGKILL at {point:?} ({at})");
        eprintln!("{what}: hit={hit} exit={:?}/{:?}", out.code, out.signal);
        // The kill lands, or the run had already finished (and published).
        match out.code {
            None => assert_eq!(out.signal, Some(9), "{what}: {}", out.stderr),
            Some(0) => assert_eq!(fx.sets().len(), sets_before + 1, "{what}"),
            Some(c) => panic!("{what}: exit {c}: {}", out.stderr),
        }
        caught.push(format!("{point:?}: {at}"));
        fx.assert_nothing_false_published(&sets, &what);
        let known: Vec<String> = sets.clone();
        let now = fx.assert_recovers(&[known[0].clone(), known[known.len() - 1].clone()], &what);
        sets = now;
    }
    // Every set, old and new, still verifies at the end.
    fx.assert_verifies(&sets, "after all kills");
    eprintln!("kill points:\n  {}", caught.join("\n  "));
}

#[test]
fn sigkill_of_the_dump_child_alone_fails_the_backup_cleanly() {
    let fx = Fx::new(V1, |_| {});
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    let first = fx.backup_ok();
    held.reset();
    let mut bg = fx.spawn_with(&config, &["backup", "--json"]);
    assert!(
        bg.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );
    let pids = dump_pids(&fx.tmp);
    assert_eq!(pids.len(), 1, "one mariadb-dump: {pids:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    fs::write(&held.release, "").unwrap();
    let out = bg.finish();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let msg = out.assert_one_message("dump killed");
    assert!(msg.contains("dump"), "{msg}");
    assert_eq!(fx.sets(), vec![first.clone()], "nothing published");
    // The run itself cleaned up: no work dir, no credentials, no process.
    faultkit::wait_gone(&fx.tmp);
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    fx.assert_recovers(&[first], "dump child killed");
}

#[test]
fn sigkill_of_the_process_group_during_the_dump() {
    let fx = Fx::new(V1, |_| {});
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    let first = fx.backup_ok();
    held.reset();
    let mut bg = faultkit::Bg::spawn(fx.command(&config, &["backup", "--json"]), true);
    assert!(
        bg.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );
    bg.signal_group(Signal::SIGKILL);
    let out = bg.finish();
    assert_eq!(out.signal, Some(9));
    // The dump runs in a group of its own: the wrapper is still waiting.
    // Releasing it lets its writes hit the closed pipe, and it ends.
    fs::write(&held.release, "").unwrap();
    assert_eq!(fx.sets(), vec![first.clone()], "nothing published");
    fx.assert_recovers(&[first], "process group killed");
}

/// SIGTERM, SIGINT and SIGHUP while the dump is held up: the documented
/// exit code, one message, nothing published, nothing left behind.
#[test]
fn sigterm_sigint_sighup_during_the_dump() {
    let fx = Fx::new(V1, |_| {});
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    let first = fx.backup_ok();
    for (sig, code) in [
        (Signal::SIGTERM, 143),
        (Signal::SIGINT, 130),
        (Signal::SIGHUP, 143),
    ] {
        held.reset();
        let mut bg = fx.spawn_with(&config, &["backup", "--json"]);
        assert!(
            bg.wait_for(|| held.pausing.exists()),
            "the dump never paused"
        );
        bg.signal(sig);
        let out = bg.finish();
        fs::write(&held.release, "").unwrap();
        let what = format!("{sig} during the dump");
        assert_eq!(out.code, Some(code), "{what}: {}", out.stderr);
        out.assert_one_message(&what);
        assert_eq!(fx.sets(), vec![first.clone()], "{what}: nothing published");
        faultkit::wait_gone(&fx.tmp);
        assert!(fx.leftovers().is_empty(), "{what}: {:?}", fx.leftovers());
    }
    fx.assert_recovers(&[first], "signals during the dump");
}

/// A signal in capture or publish: either the run stops (130/143, nothing
/// published) or it had already renamed its set (exit 0, the set verifies).
#[test]
fn sigterm_sigint_sighup_during_capture_and_publish() {
    // Bigger attachments: capture takes long enough to be caught in.
    let mut fx = Fx::new(V1, |s| s.attachment_bytes = 60_000);
    let mut sets = vec![fx.backup_ok()];
    let mut outcomes = Vec::new();
    let mut n = 0;
    for phase in ["capture", "config", "publish"] {
        for (sig, code) in [
            (Signal::SIGTERM, 143),
            (Signal::SIGINT, 130),
            (Signal::SIGHUP, 143),
        ] {
            n += 1;
            add_attachments(common::server(), &mut fx.store, 40, 500 + n).unwrap();
            let objects_before = object_count(&fx.repo);
            let before = fx.sets();
            let mut bg = fx.spawn(&["backup", "--json"], false);
            let repo = fx.repo.clone();
            let hit = bg.stop_when(|| match phase {
                // The dump's chunks are objects too: capture is under way
                // once its index exists and an object beyond the dump's is.
                "capture" => {
                    work_file_len(&repo, "attachments.jsonl.zst").is_some()
                        && object_count(&repo) > objects_before
                }
                "config" => work_file_len(&repo, "config.tar.zst").is_some(),
                _ => work_file_len(&repo, "manifest.json").is_some(),
            });
            let at = where_it_was(&fx, before.len());
            bg.signal(sig);
            bg.signal(Signal::SIGCONT);
            let out = bg.finish();
            let what = format!("{sig} during {phase} ({at}, hit={hit})");
            outcomes.push(format!("{what}: exit {:?}", out.code));
            match out.code {
                Some(c) if c == code => {
                    out.assert_one_message(&what);
                    assert_eq!(fx.sets(), before, "{what}: nothing published");
                }
                Some(0) => {
                    // The signal landed while the set was being published:
                    // the finished set is kept, and the run says so.
                    // (Unless the run had ended before it was caught: then
                    // the signal came too late to be seen at all.)
                    assert_eq!(fx.sets().len(), before.len() + 1, "{what}");
                    assert!(
                        !hit || out.stderr.contains("was finished and is kept"),
                        "{what}: {}",
                        out.stderr
                    );
                }
                other => panic!("{what}: exit {other:?}: {}", out.stderr),
            }
            faultkit::wait_gone(&fx.tmp);
            fx.assert_nothing_false_published(&before, &what);
            sets = fx.assert_recovers(&[sets[0].clone(), sets[sets.len() - 1].clone()], &what);
        }
    }
    eprintln!("outcomes:\n  {}", outcomes.join("\n  "));
    fx.assert_verifies(&sets, "after the signals");
}

/// SIGKILL of verify and of restore part-way: the repository is unharmed
/// (the lock is free, every set verifies, the next backup is fine).
#[test]
fn sigkill_of_verify_and_restore() {
    let fx = Fx::new(V1, |s| s.attachment_bytes = 40_000);
    let first = fx.backup_ok();
    for delay in [30, 150, 400] {
        let mut bg = fx.spawn(&["verify", &first, "--json"], false);
        std::thread::sleep(Duration::from_millis(delay));
        let running = bg.is_running();
        bg.signal(Signal::SIGKILL);
        let out = bg.finish();
        eprintln!(
            "verify killed after {delay} ms (running: {running}): {:?}",
            out.signal
        );
    }
    // verify's own temporaries of killed runs are issue 8 item 8; only the
    // repository is checked here.
    for entry in names(&fx.tmp) {
        let _ = fs::remove_dir_all(fx.tmp.join(entry));
    }
    for delay in [50u64, 300, 800] {
        let args = fx.restore_args(&first, "restored");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut bg = fx.spawn(&args, false);
        std::thread::sleep(Duration::from_millis(delay));
        let running = bg.is_running();
        bg.signal(Signal::SIGKILL);
        let out = bg.finish();
        eprintln!(
            "restore killed after {delay} ms (running: {running}): {:?} {}",
            out.signal, out.stderr
        );
        faultkit::wait_gone(&fx.tmp);
        for entry in names(&fx.tmp) {
            let _ = fs::remove_dir_all(fx.tmp.join(entry));
        }
    }
    fx.assert_verifies(std::slice::from_ref(&first), "after killed readers");
    fx.assert_recovers(&[first], "verify and restore killed");
}
