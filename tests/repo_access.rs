//! Who may use the repository, and what a refused run is told: the lock's
//! holders are named with their operation and pid (several backups at once,
//! a backup while a verify runs), and a read-only repository (a real
//! read-only bind mount) still verifies, restores and drills.

mod common;
mod runs;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kcbackup::layout::Layout;
use nix::sys::signal::Signal;
use runs::{freeze_when, names, signal};
use serde_json::Value;
use support::{Env, env, text};

fn kcbackup(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcbackup"));
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn code_and_stderr(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn published(env: &Env) -> Vec<String> {
    names(&env.repo.join("sets"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn of_backups_started_at_once_one_wins_and_the_others_name_it() {
    let env = env(Layout::FilesV2);
    let children: Vec<_> = (0..4)
        .map(|_| kcbackup(&env, &["backup", "--json"]).spawn().unwrap())
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = (0..4).filter(|i| outs[*i].status.success()).collect();
    assert_eq!(winners.len(), 1, "exactly one wins");
    let winner = pids[winners[0]];
    for (i, out) in outs.iter().enumerate() {
        if i == winners[0] {
            continue;
        }
        let (code, stderr) = code_and_stderr(out);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "another kcbackup run holds the lock: backup, pid {winner}, since "
            )),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert_eq!(published(&env).len(), 1);
    assert!(names(&env.repo.join("holders")).is_empty(), "records left");
}

#[test]
fn a_backup_refused_while_a_verify_runs_names_the_verify() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let run = env.backup(&[]);
    let set = text(&run.json, "set").to_string();
    let mut verify = kcbackup(&env, &["verify", &set, "--json"]).spawn().unwrap();
    let record = env
        .repo
        .join("holders")
        .join(format!("{}.json", verify.id()));
    freeze_when(&mut verify, "the verify's lock record", || {
        fs::read_to_string(&record).is_ok_and(|t| t.contains("verify of set"))
    });
    let out = kcbackup(&env, &["backup"]).output().unwrap();
    signal(verify.id(), Signal::SIGCONT);
    let (code, stderr) = code_and_stderr(&out);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another kcbackup run holds the lock: verify of set {set}, pid {}, since ",
            verify.id()
        )),
        "{stderr}"
    );
    let verified = verify.wait_with_output().unwrap();
    assert!(verified.status.success());
    assert_eq!(published(&env).len(), 1);
    // With the verify gone, its record is gone and a backup runs.
    assert!(names(&env.repo.join("holders")).is_empty());
    assert_eq!(env.backup(&[]).code, 0);
}

/// A read-only bind mount of `src` at `dst`, unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    /// `None` (after printing SKIPPED) when not root.
    fn mount(src: &Path, dst: &Path) -> Option<ReadOnly> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a read-only bind mount needs root");
            return None;
        }
        fs::create_dir_all(dst).unwrap();
        let sh = |args: &[&str]| {
            let status = Command::new("mount").args(args).status().unwrap();
            assert!(status.success(), "mount {args:?}");
        };
        sh(&["--bind", src.to_str().unwrap(), dst.to_str().unwrap()]);
        let mounted = ReadOnly(dst.to_path_buf());
        sh(&["-o", "remount,bind,ro", dst.to_str().unwrap()]);
        Some(mounted)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_repository_verifies_restores_and_drills_and_refuses_backup() {
    let env = env(Layout::FilesV1 { l1: 7, l2: 5 });
    let run = env.backup(&[]);
    let set = text(&run.json, "set").to_string();
    let work = tempfile::Builder::new().prefix("kcro-").tempdir().unwrap();
    let ro = work.path().join("ro");
    let Some(mount) = ReadOnly::mount(&env.repo, &ro) else {
        return;
    };
    assert!(
        fs::write(ro.join("probe"), b"x").is_err(),
        "the mount is read-only"
    );
    let repo_arg = ro.to_str().unwrap().to_string();
    let with_repo = |args: &[&str]| {
        let mut all = vec!["--repository", repo_arg.as_str()];
        all.extend_from_slice(args);
        kcbackup(&env, &all).output().unwrap()
    };

    let (code, stderr) = code_and_stderr(&with_repo(&["verify", &set]));
    assert_eq!(code, 0, "verify: {stderr}");
    let target = work.path().join("restored");
    let out = with_repo(&[
        "restore",
        &set,
        "--to-attachments",
        target.to_str().unwrap(),
    ]);
    let (code, stderr) = code_and_stderr(&out);
    assert_eq!(code, 0, "restore: {stderr}");
    assert!(!names(&target).is_empty());
    let (code, stderr) = code_and_stderr(&with_repo(&["list"]));
    assert_eq!(code, 0, "list: {stderr}");

    // The drill's verdict stands; it says that it could not be recorded.
    let out = with_repo(&["drill", &set, "--json"]);
    let (code, stderr) = code_and_stderr(&out);
    assert_eq!(code, 0, "drill: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let why = report["not_recorded"].as_str().unwrap_or_default();
    assert!(why.contains("Read-only file system"), "{report:#}");
    assert!(
        stderr.contains("not recorded in the repository"),
        "{stderr}"
    );

    // A backup cannot write there: one line, exit 1, nothing changed.
    let (code, stderr) = code_and_stderr(&with_repo(&["backup"]));
    assert_eq!(code, 1, "backup: {stderr}");
    assert!(
        stderr.to_lowercase().contains("read-only file system"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Without a lock file at all (a repository copied without it).
    drop(mount);
    fs::remove_file(env.repo.join("lock")).unwrap();
    let _mount = ReadOnly::mount(&env.repo, &ro).unwrap();
    let (code, stderr) = code_and_stderr(&with_repo(&["verify", &set]));
    assert_eq!(code, 0, "verify without a lock file: {stderr}");
    assert_eq!(published(&env), vec![set]);
}
