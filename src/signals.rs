//! SIGINT, SIGTERM and SIGHUP become a flag that loops poll with [`check`], so
//! guards drop and clean up before the exit (130/143); a watcher thread also
//! terminates registered children (the dump), waking a loop blocked on one.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Interrupted, exit_for};

/// The first signal received, 0 while none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Children to terminate when a signal arrives, as `kill` takes them:
/// a pid, or a negated process group id.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// After this many signals the process exits without waiting for cleanup.
const FORCE_AFTER: usize = 3;

/// Installs the handlers and the watcher thread; later calls do nothing.
pub fn install() -> Result<()> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
            thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for (count, sig) in signals.forever().enumerate() {
                        on_signal(sig, count + 1);
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("while installing the signal handlers")
}

fn on_signal(sig: i32, count: usize) {
    let first = RECEIVED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    let name = Signal::try_from(sig).map_or("a signal", |s| s.as_str());
    if first {
        eprintln!(
            "kcbackup: {name} received: stopping and cleaning up \
             (send it {} more times to exit at once)",
            FORCE_AFTER - 1
        );
        terminate_children();
    } else if count >= FORCE_AFTER {
        eprintln!("kcbackup: exiting without cleanup; the next run removes what is left");
        std::process::exit(exit_for(&Interrupted(sig).into()) as i32);
    }
}

fn terminate_children() {
    let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// The signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// `Err(Interrupted)` once a signal arrived: call it in every long loop and
/// between phases; the `?` unwinds through the guards, which clean up.
pub fn check() -> Result<()> {
    match received() {
        None => Ok(()),
        Some(sig) => Err(Interrupted(sig).into()),
    }
}

/// Turns an error that a signal caused (a killed child, a closed pipe) into
/// an [`Interrupted`] one, keeping its message; other errors pass unchanged.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    let already = err.chain().any(|c| c.is::<Interrupted>());
    match received() {
        Some(sig) if !already => anyhow::Error::new(Interrupted(sig)).context(format!("{err:#}")),
        _ => err,
    }
}

/// While alive, the child `pid` gets SIGTERM when a signal arrives (at once,
/// if one already did). Drop it right after waiting for the child.
#[must_use = "the child is only terminated while the guard lives"]
pub struct TerminateOnSignal(i32);

pub fn terminate_on_signal(pid: u32) -> TerminateOnSignal {
    register(pid as i32)
}

/// Like [`terminate_on_signal`] for a child started as the leader of its own
/// process group (`process_group(0)`): the whole group gets SIGTERM.
pub fn terminate_group_on_signal(pgid: u32) -> TerminateOnSignal {
    register(-(pgid as i32))
}

/// The test-only variable naming the point a run stops itself at.
pub const PAUSE_ENV: &str = "KCBACKUP_TEST_PAUSE_AT";

/// For tests only: the process stops itself (SIGSTOP) when
/// `KCBACKUP_TEST_PAUSE_AT` names `point`, so a test can act at exactly
/// that point and then SIGCONT or SIGKILL it. Unset, it does nothing.
pub fn pause_for_test(point: &str) {
    if std::env::var_os(PAUSE_ENV).is_some_and(|v| v == point) {
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
    }
}

/// SIGKILL to every process of the group `pgid` (best effort).
pub fn kill_group(pgid: u32) {
    let _ = kill(Pid::from_raw(-(pgid as i32)), Signal::SIGKILL);
}

fn register(target: i32) -> TerminateOnSignal {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(target);
    }
    if received().is_some() {
        let _ = kill(Pid::from_raw(target), Signal::SIGTERM);
    }
    TerminateOnSignal(target)
}

impl Drop for TerminateOnSignal {
    fn drop(&mut self) {
        if let Ok(mut c) = CHILDREN.lock()
            && let Some(i) = c.iter().position(|p| *p == self.0)
        {
            c.swap_remove(i);
        }
    }
}
