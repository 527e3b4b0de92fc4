//! Runs killed or interrupted in the middle leave nothing behind for long:
//! a SIGKILLed drill's scratch directory (and its throwaway server) and a
//! SIGKILLed verify's decoded reference lists are removed by the next run;
//! SIGTERM/SIGINT end a verify with a message, cleanup and exit 143/130.

mod common;
mod runs;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kcbackup::layout::Layout;
use nix::sys::signal::Signal;
use runs::{freeze_when, names, processes_mentioning, signal, starting_with};
use serde_json::Value;
use support::{Env, env, text};

/// A store with a complete set, and `scratch/` and `tmp/` (as TMPDIR).
fn backed_up() -> (Env, String, tempfile::TempDir) {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    let work = tempfile::Builder::new()
        .prefix("kcleft-")
        .tempdir()
        .unwrap();
    fs::create_dir(work.path().join("scratch")).unwrap();
    fs::create_dir(work.path().join("tmp")).unwrap();
    (env, set, work)
}

fn kcbackup(env: &Env, tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcbackup"));
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The drill's `kcbackup-drill-*` directory in `parent` once its server's
/// database directory exists (the dump is loading).
fn loading_drill(parent: &Path) -> Option<PathBuf> {
    let drill = starting_with(parent, "kcbackup-drill-")
        .into_iter()
        .next()?;
    let sandbox = starting_with(&drill, "kcsb-").into_iter().next()?;
    sandbox.join("data/kopano").is_dir().then_some(drill)
}

/// SIGKILLs a drill (with its scratch in `parent`) while its dump loads;
/// returns its scratch directory, left behind.
fn kill_a_drill(env: &Env, set: &str, tmp: &Path, parent: &Path, scratch: bool) -> PathBuf {
    let mut args = vec!["drill", set, "--json"];
    let parent_arg = parent.to_str().unwrap().to_string();
    if scratch {
        args.extend(["--scratch", parent_arg.as_str()]);
    }
    let mut child = kcbackup(env, tmp, &args).spawn().unwrap();
    freeze_when(&mut child, "the drill's database load", || {
        loading_drill(parent).is_some()
    });
    let dir = loading_drill(parent).unwrap();
    signal(child.id(), Signal::SIGKILL);
    child.wait().unwrap();
    assert!(dir.is_dir(), "the killed drill's scratch directory is left");
    dir
}

fn assert_gone(dir: &Path) {
    assert!(!dir.exists(), "{} is still there", dir.display());
    let procs = processes_mentioning(dir.to_str().unwrap());
    assert!(procs.is_empty(), "processes of the killed run: {procs:#?}");
}

#[test]
fn a_sigkilled_drills_scratch_is_removed_by_the_next_drill_or_backup() {
    let (env, set, work) = backed_up();
    let tmp = work.path().join("tmp");
    let scratch = work.path().join("scratch");

    // With --scratch: the next drill (same --scratch) removes it.
    let old = kill_a_drill(&env, &set, &tmp, &scratch, true);
    let out = kcbackup(&env, &tmp, &["drill", &set, "--json", "--scratch"])
        .arg(&scratch)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = report["removed_leftovers"].as_array().unwrap();
    assert!(
        removed
            .iter()
            .any(|r| r.as_str().unwrap().starts_with(old.to_str().unwrap())),
        "{removed:?}"
    );
    assert!(
        stderr.contains(&format!("removed {}", old.display())),
        "{stderr}"
    );
    assert_gone(&old);
    assert!(names(&scratch).is_empty(), "{:?}", names(&scratch));

    // In the temp dir: the next backup removes it.
    let old = kill_a_drill(&env, &set, &tmp, &tmp, false);
    let out = kcbackup(&env, &tmp, &["backup", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = report["removed_leftovers"].as_array().unwrap();
    assert!(
        removed
            .iter()
            .any(|r| r.as_str().unwrap().starts_with(old.to_str().unwrap())),
        "{removed:?}"
    );
    assert_gone(&old);
    let left: Vec<String> = names(&tmp)
        .into_iter()
        .filter(|n| n.starts_with("kcbackup-drill-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Starts a verify and freezes it while its scratch directory exists.
fn verify_in_the_middle(env: &Env, set: &str, tmp: &Path) -> (std::process::Child, PathBuf) {
    let mut child = kcbackup(env, tmp, &["verify", set, "--json"])
        .spawn()
        .unwrap();
    freeze_when(&mut child, "verify's scratch directory", || {
        !starting_with(tmp, "kcbackup-verify-").is_empty()
    });
    let dir = starting_with(tmp, "kcbackup-verify-").remove(0);
    (child, dir)
}

#[test]
fn sigterm_and_sigint_stop_a_verify_with_a_message_cleanup_and_130_or_143() {
    let (env, set, work) = backed_up();
    let tmp = work.path().join("tmp");
    for (sig, code, name) in [
        (Signal::SIGTERM, 143, "SIGTERM"),
        (Signal::SIGINT, 130, "SIGINT"),
    ] {
        let (child, dir) = verify_in_the_middle(&env, &set, &tmp);
        signal(child.id(), sig);
        signal(child.id(), Signal::SIGCONT);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} received: stopping and cleaning up")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("interrupted by {name}")),
            "{stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "an interrupted verify gives no verdict"
        );
        assert!(!dir.exists(), "{name}: {} left", dir.display());
        assert!(names(&tmp).is_empty(), "{name}: {:?}", names(&tmp));
        assert!(names(&env.repo.join("holders")).is_empty());
    }
}

#[test]
fn a_sigkilled_verifys_scratch_is_removed_by_the_next_verify() {
    let (env, set, work) = backed_up();
    let tmp = work.path().join("tmp");
    let (mut child, dir) = verify_in_the_middle(&env, &set, &tmp);
    signal(child.id(), Signal::SIGKILL);
    child.wait().unwrap();
    assert!(dir.is_dir(), "the killed verify's directory is left");
    let out = kcbackup(&env, &tmp, &["verify", &set, "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("removed {}", dir.display())),
        "{stderr}"
    );
    assert!(names(&tmp).is_empty(), "{:?}", names(&tmp));
}
