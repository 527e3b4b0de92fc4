//! Helpers for tests that watch kcbackup runs from outside: freezing a run
//! at a chosen moment (SIGSTOP until a condition holds), finding processes
//! by command line, listing directories.
#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("sending a signal");
}

/// Lets `child` run in small steps until `cond` holds while it is stopped;
/// returns with the child STOPPED (send SIGCONT). Panics if the child
/// exits first or a minute passes.
pub fn freeze_when(child: &mut Child, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        signal(child.id(), Signal::SIGSTOP);
        if cond() {
            return;
        }
        signal(child.id(), Signal::SIGCONT);
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "no {what} within a minute");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Names in `dir` (empty if it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Entries of `dir` whose name starts with `prefix`.
pub fn starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| dir.join(n))
        .collect()
}

/// Processes whose command line mentions `needle`, as `pid: cmdline`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}
