//! SIGKILL of `kcbackup prune` at every step of its garbage collection:
//! at the 11 points it passes (made to stop itself there with the test-only
//! `KCBACKUP_TEST_PAUSE_AT`, then killed from here), and at events seen from
//! outside (the first trash directory, the first deleted object: the
//! repository polled in a tight loop, the run frozen with SIGSTOP the moment
//! it shows) and after a few milliseconds. After each kill: every remaining
//! set still has every object it references and verifies; the next prune
//! exits 0, leaves no trash and no unreferenced object.

mod common;
mod faultkit;
mod prunekit;

use std::fs;
use std::time::{Duration, Instant};

use faultkit::{Bg, Fx, V1, names};
use kcbackup::commands::prune::{PAUSE_ENV, PAUSE_POINTS};
use kcbackup::generator::add_attachments;
use nix::sys::signal::Signal;
use prunekit::{assert_store_is_exactly_live, purge, references, stored, trash};

#[derive(Debug, Clone, Copy)]
enum Point {
    /// Stopped by itself at this point.
    Inside(&'static str),
    /// The first `sets/.trash-*` shows.
    TrashSeen,
    /// The store holds fewer objects than before.
    ObjectGone,
    AfterMs(u64),
}

/// Two nights: new messages, some purged, a backup each.
fn two_nights(fx: &mut Fx, seed: u64) {
    for n in 0..2 {
        add_attachments(common::server(), &mut fx.store, 6, seed * 10 + n).expect("adding");
        purge(fx, 3);
        fx.backup_ok();
    }
}

/// Every remaining set still has all it references, and verifies.
fn assert_remaining_intact(fx: &Fx, what: &str) {
    let have = stored(&fx.repo);
    for (set, refs) in references(&fx.repo) {
        let missing: Vec<_> = refs.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{what}: set {set} lost objects {missing:?}"
        );
    }
    fx.assert_verifies(&fx.sets(), what);
}

#[test]
fn sigkill_of_prune_at_every_step_then_the_next_prune_finishes_the_job() {
    let mut fx = Fx::new(V1, |_| {});
    fx.backup_ok();
    let mut points: Vec<Point> = PAUSE_POINTS.iter().map(|p| Point::Inside(p)).collect();
    points.extend([
        Point::TrashSeen,
        Point::ObjectGone,
        Point::AfterMs(5),
        Point::AfterMs(40),
    ]);
    let mut log = Vec::new();
    for (i, point) in points.iter().enumerate() {
        two_nights(&mut fx, 100 + i as u64);
        let sets_before = fx.sets();
        let objects_before = stored(&fx.repo).len();
        let args = ["prune", "--keep-last", "2", "--json"];
        let mut cmd = fx.command(&fx.config, &args);
        if let Point::Inside(p) = point {
            cmd.env(PAUSE_ENV, p);
        }
        let mut bg = Bg::spawn(cmd, false);
        let started = Instant::now();
        let pid = bg.child.id();
        let hit = match point {
            Point::Inside(_) => bg.wait_for(|| common::is_stopped(pid)),
            Point::TrashSeen => bg.stop_when(|| {
                names(&fx.repo.join("sets"))
                    .iter()
                    .any(|n| n.starts_with(".trash-"))
            }),
            Point::ObjectGone => bg.stop_when(|| stored(&fx.repo).len() < objects_before),
            Point::AfterMs(ms) => bg.stop_when(|| started.elapsed() >= Duration::from_millis(*ms)),
        };
        if let Point::Inside(p) = point {
            assert!(hit, "prune never reached {p}");
        }
        let at = format!(
            "{} sets, {} retired, {} of {objects_before} objects",
            fx.sets().len(),
            trash(&fx.repo).len(),
            stored(&fx.repo).len()
        );
        bg.signal(Signal::SIGKILL);
        let out = bg.finish();
        let what = format!("SIGKILL at {point:?} ({at})");
        eprintln!("{what}: hit={hit} exit={:?}/{:?}", out.code, out.signal);
        match out.code {
            None => assert_eq!(out.signal, Some(9), "{what}: {}", out.stderr),
            // Seen from outside, the run may end between the event and
            // the SIGSTOP; stopped by itself, it must not run on.
            Some(0) => assert!(
                !matches!(point, Point::Inside(_)),
                "{what}: ran on after stopping itself"
            ),
            Some(c) => panic!("{what}: exit {c}: {}", out.stderr),
        }
        // No set appears that was not there; the kept ones always remain.
        let now = fx.sets();
        assert!(
            now.iter().all(|s| sets_before.contains(s)),
            "{what}: {now:?}"
        );
        assert!(
            sets_before[sets_before.len() - 2..]
                .iter()
                .all(|s| now.contains(s)),
            "{what}: a kept set went: {now:?}"
        );
        if let Point::Inside("retired-all") = point {
            // What a kill inside the trash's deletion leaves: a retired set
            // with part of its files gone.
            let t = trash(&fx.repo);
            assert_eq!(t.len(), 2, "{what}: {t:?}");
            fs::remove_file(fx.repo.join("sets").join(&t[0]).join("manifest.json")).unwrap();
        }
        assert_remaining_intact(&fx, &what);

        let next = fx.run(&args);
        assert_eq!(
            next.code,
            Some(0),
            "{what}: the next prune: {}",
            next.stderr
        );
        assert_eq!(fx.sets(), sets_before[sets_before.len() - 2..], "{what}");
        assert!(
            trash(&fx.repo).is_empty(),
            "{what}: trash left: {:?}",
            trash(&fx.repo)
        );
        assert_store_is_exactly_live(&fx.repo, &what);
        assert!(fx.leftovers().is_empty(), "{what}: {:?}", fx.leftovers());
        let finished = next.json()["finished_earlier"]
            .as_array()
            .map_or(0, Vec::len);
        log.push(format!(
            "{point:?}: {at}; the next prune finished {finished} retired"
        ));
    }
    fx.assert_verifies(&fx.sets(), "after all kills");
    eprintln!("kill points:\n  {}", log.join("\n  "));
}

/// SIGTERM while prune is stopped at a point, then SIGCONT: it stops at its
/// next check with exit 143 and one message; the next prune finishes.
#[test]
fn sigterm_during_prune_stops_it_cleanly_and_the_next_prune_finishes() {
    let mut fx = Fx::new(V1, |_| {});
    fx.backup_ok();
    for (i, point) in ["retired-first", "planned", "deleted-first-object"]
        .into_iter()
        .enumerate()
    {
        two_nights(&mut fx, 500 + i as u64);
        let sets_before = fx.sets();
        let args = ["prune", "--keep-last", "2", "--json"];
        let mut cmd = fx.command(&fx.config, &args);
        cmd.env(PAUSE_ENV, point);
        let mut bg = Bg::spawn(cmd, false);
        let pid = bg.child.id();
        assert!(
            bg.wait_for(|| common::is_stopped(pid)),
            "prune never reached {point}"
        );
        bg.signal(Signal::SIGTERM);
        bg.signal(Signal::SIGCONT);
        let out = bg.finish();
        let what = format!("SIGTERM at {point}");
        assert_eq!(out.code, Some(143), "{what}: {}", out.stderr);
        let msg = out.assert_one_message(&what);
        assert!(msg.contains("SIGTERM"), "{what}: {msg}");
        assert_remaining_intact(&fx, &what);
        let next = fx.run(&args);
        assert_eq!(
            next.code,
            Some(0),
            "{what}: the next prune: {}",
            next.stderr
        );
        assert_eq!(fx.sets(), sets_before[sets_before.len() - 2..], "{what}");
        assert!(trash(&fx.repo).is_empty(), "{what}");
        assert_store_is_exactly_live(&fx.repo, &what);
    }
}
