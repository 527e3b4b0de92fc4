//! Signals in a child process holding a "none" snapshot (no root needed): a
//! phase blocked on a child wakes up, the exit codes are 130/143, and a third
//! signal forces the exit of a process that never checks.

mod snapfix;

use nix::sys::signal::Signal;
use snapfix::Holder;

/// Hidden helper: run by the tests below in a child process.
#[test]
#[ignore = "helper: started by the signal tests"]
fn hold_snapshot_until_signalled() {
    snapfix::hold_snapshot_until_signalled();
}

#[test]
fn a_signal_wakes_a_phase_blocked_on_a_child_and_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    for (sig, mode, code) in [
        (Signal::SIGTERM, "sleeper", 143),
        (Signal::SIGHUP, "sleeper", 143),
        (Signal::SIGINT, "sleeper", 130),
        (Signal::SIGINT, "poll", 130),
    ] {
        let holder = Holder::start(dir.path(), dir.path(), mode);
        let started = std::time::Instant::now();
        assert_eq!(holder.signal_and_wait(sig), Some(code), "{sig} ({mode})");
        // Not the 60 s the blocked-on child would have taken by itself.
        assert!(started.elapsed().as_secs() < 20, "{sig} ({mode})");
    }
}

#[test]
fn a_third_signal_forces_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let holder = Holder::start(dir.path(), dir.path(), "stubborn");
    let sigs = [Signal::SIGTERM, Signal::SIGTERM, Signal::SIGTERM];
    assert_eq!(holder.signals_and_wait(&sigs), Some(143));
}
