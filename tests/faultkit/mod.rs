//! Fault-injection harness: a generated store with its repository and a
//! private TMPDIR, kcbackup runs in the background stopped at events seen
//! from outside (the repository polled in a tight loop, /proc for children),
//! and the checks every fault must pass afterwards (`Fx::assert_recovers`).
//! Use with `mod common; mod faultkit;` from a file in tests/.
#![allow(dead_code)] // each fault test binary uses a different part

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kcbackup::generator::{GeneratedStore, StoreSpec};
use kcbackup::layout::Layout;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common;

pub mod writer;

/// How long a test waits for a run to reach a point or to end; a run still
/// going after that is a hang, and the test fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The files_v1 layout Kopano installs by default.
pub const V1: Layout = Layout::FilesV1 { l1: 10, l2: 20 };

/// A generated store, its repository, config and the TMPDIR of every run
/// (credential directories, verify's temporaries), all under one directory.
pub struct Fx {
    pub store: GeneratedStore,
    pub repo: PathBuf,
    pub config: PathBuf,
    pub tmp: PathBuf,
    pub dir: tempfile::TempDir,
    /// kcbackup runs by command, printed when the fixture is dropped.
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    _store_dir: tempfile::TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("faultkit: kcbackup runs by command: {c:?}");
    }
}

/// What a finished run returned.
#[derive(Debug)]
pub struct Out {
    /// `None`: ended by a signal (see `signal`).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The published set a `--json` backup names.
    pub fn set(&self) -> Option<String> {
        self.json()["set"].as_str().map(str::to_string)
    }

    /// The run failed with exactly one readable error line (`kcbackup: ...`,
    /// beside the signal handler's own notice) and no panic.
    pub fn assert_one_message(&self, what: &str) -> String {
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: panic: {}",
            self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("kcbackup: ") && !l.contains(" received: stopping"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "{what}: want one error line, stderr: {}",
            self.stderr
        );
        errors[0].to_string()
    }
}

impl Fx {
    /// A small store (`StoreSpec::small`, `tweak`ed) with an empty repository.
    pub fn new(layout: Layout, tweak: impl FnOnce(&mut StoreSpec)) -> Fx {
        let (store_dir, store) = common::new_store(layout, tweak);
        Fx::with_store(store_dir, store)
    }

    /// Like [`Fx::new`], with the store generated under `root` (a
    /// filesystem of the test's choice, e.g. a btrfs subvolume).
    pub fn new_at(root: &Path, layout: Layout, tweak: impl FnOnce(&mut StoreSpec)) -> Fx {
        let mut spec = StoreSpec::small(layout, common::unique_db("kc"));
        tweak(&mut spec);
        let store = kcbackup::generator::generate(common::server(), root, &spec)
            .expect("generating a store");
        let unused = tempfile::tempdir().expect("temp dir");
        Fx::with_store(unused, store)
    }

    fn with_store(store_dir: tempfile::TempDir, store: GeneratedStore) -> Fx {
        let dir = tempfile::Builder::new()
            .prefix("kcfault-")
            .tempdir()
            .expect("temp dir");
        let repo = dir.path().join("repo");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).expect("creating TMPDIR");
        let config = common::write_tool_config(dir.path(), &store, &repo);
        Fx {
            store,
            repo,
            config,
            tmp,
            dir,
            counts: Default::default(),
            _store_dir: store_dir,
        }
    }

    /// Writes `<name>.toml` like the main config plus `extra` TOML text.
    pub fn config_with(&self, name: &str, repo: &Path, extra: &str) -> PathBuf {
        self.config_snapshot(name, repo, "none", extra)
    }

    /// Writes `<name>.toml` with `[snapshot] method` and `extra` TOML text.
    pub fn config_snapshot(&self, name: &str, repo: &Path, method: &str, extra: &str) -> PathBuf {
        let mut text = self.store.tool_config(repo, method);
        text.push_str(extra);
        let path = self.dir.path().join(format!("{name}.toml"));
        fs::write(&path, text).expect("writing config");
        path
    }

    /// kcbackup with the fixture's config and TMPDIR.
    pub fn command(&self, config: &Path, args: &[&str]) -> Command {
        self.count(args);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcbackup"));
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .env("TMPDIR", &self.tmp)
            .stdin(Stdio::null());
        cmd
    }

    fn count(&self, args: &[&str]) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(args.first().copied().unwrap_or("").to_string())
            .or_default() += 1;
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(&self.config, args)
    }

    pub fn run_with(&self, config: &Path, args: &[&str]) -> Out {
        Bg::spawn(self.command(config, args), false).finish()
    }

    /// A run in the background; `own_group`: in a process group of its own
    /// (as a shell starts a job), so the test can signal the whole group.
    pub fn spawn(&self, args: &[&str], own_group: bool) -> Bg {
        Bg::spawn(self.command(&self.config, args), own_group)
    }

    pub fn spawn_with(&self, config: &Path, args: &[&str]) -> Bg {
        Bg::spawn(self.command(config, args), false)
    }

    /// The arguments of a restore of `set` into the shared server, as root
    /// (empty password), into a database and a directory of their own
    /// (named after `tag`).
    pub fn restore_args(&self, set: &str, tag: &str) -> Vec<String> {
        let pw = self.dir.path().join("root.pw");
        fs::write(&pw, "\n").expect("writing the root password file");
        let db = common::unique_db(tag);
        let att = self.dir.path().join(format!("restored-{db}"));
        let socket = common::server().socket().display().to_string();
        let args = [
            "restore",
            set,
            "--json",
            "--mysql-user",
            "root",
            "--mysql-socket",
            &socket,
            "--mysql-password-file",
            &pw.display().to_string(),
            "--to-database",
            &db,
            "--to-attachments",
            &att.display().to_string(),
        ];
        args.iter().map(|a| a.to_string()).collect()
    }

    /// A backup that must succeed; returns the set.
    pub fn backup_ok(&self) -> String {
        let out = self.run(&["backup", "--json"]);
        assert_eq!(out.code, Some(0), "backup: {}", out.stderr);
        out.set().expect("a set id")
    }

    /// `verify SET`: exit code and the run.
    pub fn verify(&self, set: &str) -> Out {
        self.run(&["verify", set, "--json"])
    }

    pub fn assert_verifies(&self, sets: &[String], what: &str) {
        for set in sets {
            let out = self.verify(set);
            assert_eq!(out.code, Some(0), "{what}: verify {set}: {}", out.stderr);
        }
    }

    pub fn sets(&self) -> Vec<String> {
        published_sets(&self.repo)
    }

    pub fn set_dir(&self, set: &str) -> PathBuf {
        self.repo.join("sets").join(set)
    }

    /// What a run leaves that it should not: work directories, unfinished
    /// objects, anything in its TMPDIR, processes started with it.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_of(&self.repo, &self.tmp)
    }

    /// After a fault: the next backup exits 0 and leaves nothing behind,
    /// and every set of `before` still verifies. Returns the sets now in
    /// the repository.
    pub fn assert_recovers(&self, before: &[String], what: &str) -> Vec<String> {
        wait_gone(&self.tmp);
        let out = self.run(&["backup", "--json"]);
        assert_eq!(out.code, Some(0), "{what}: the next backup: {}", out.stderr);
        let left = self.leftovers();
        assert!(left.is_empty(), "{what}: left behind: {left:?}");
        self.assert_verifies(before, what);
        self.sets()
    }

    /// Every set not in `before` is one verify passes (a run killed right
    /// after its rename published a good set); none is half-written.
    pub fn assert_nothing_false_published(&self, before: &[String], what: &str) {
        for set in self.sets() {
            if !before.contains(&set) {
                let out = self.verify(&set);
                assert_eq!(
                    out.code,
                    Some(0),
                    "{what}: a new set {set} was published that does not verify: {}",
                    out.stderr
                );
            }
        }
    }
}

/// Published sets (not `.work-*`), sorted.
pub fn published_sets(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = names(&repo.join("sets"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

pub fn names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn leftovers_of(repo: &Path, tmp: &Path) -> Vec<String> {
    let mut left: Vec<String> = names(&repo.join("sets"))
        .into_iter()
        .filter(|n| n.starts_with(".work-"))
        .map(|n| format!("sets/{n}"))
        .collect();
    left.extend(
        names(&repo.join("objects/.tmp"))
            .into_iter()
            .map(|n| format!("objects/.tmp/{n}")),
    );
    left.extend(names(tmp).into_iter().map(|n| format!("$TMPDIR/{n}")));
    left.extend(processes_mentioning(tmp));
    left
}

/// Processes whose command line mentions `needle` (the dump's defaults
/// file lies in the run's TMPDIR): `pid comm`.
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            // A zombie has an empty cmdline, so whatever matched is alive.
            found.push(format!("process {pid} {}", comm.trim()));
        }
    }
    found
}

/// Pids of the real `mariadb-dump` (not a wrapper) started with `tmp`.
pub fn dump_pids(tmp: &Path) -> Vec<i32> {
    processes_mentioning(tmp)
        .iter()
        .filter(|p| p.ends_with("mariadb-dump") || p.ends_with("mysqldump"))
        .filter_map(|p| p.split(' ').nth(1)?.parse().ok())
        .collect()
}

/// Waits (bounded) until no process started with `tmp` is left: a dump
/// whose reader was killed ends at its next write.
pub fn wait_gone(tmp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_mentioning(tmp).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A kcbackup run in the background; output read on threads.
pub struct Bg {
    pub child: Child,
    pub started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Bg {
    pub fn spawn(mut cmd: Command, own_group: bool) -> Bg {
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kcbackup");
        let (stdout, stderr) = common::drain_output(&mut child);
        Bg {
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.pid(), sig);
    }

    /// Signals the run's process group (it must lead one: `own_group`).
    pub fn signal_group(&self, sig: Signal) {
        killpg(self.pid(), sig).expect("killpg");
    }

    /// Polls `cond` (tight loop) until it holds, then stops the run at once
    /// with SIGSTOP so the test can look at where it is. `false` if the run
    /// ended first.
    pub fn stop_when(&mut self, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if cond() {
                self.signal(Signal::SIGSTOP);
                return true;
            }
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gave up waiting for an event");
            }
            std::hint::spin_loop();
        }
    }

    /// Polls `cond` every few milliseconds; `false` if the run ended first.
    pub fn wait_for(&mut self, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gave up waiting for an event");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the end; a run still going after [`PATIENCE`] is killed
    /// and the test fails.
    pub fn finish(mut self) -> Out {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("kcbackup did not end within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(3));
        };
        Out {
            code: status.code(),
            signal: status.signal(),
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
        }
    }
}

/// What a reader thread collected; a process that outlived kcbackup and
/// inherited the pipe would hold it open: give up after a while.
fn joined(reader: Option<JoinHandle<String>>) -> String {
    let Some(reader) = reader else {
        return String::new();
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if reader.is_finished() {
        reader.join().unwrap_or_default()
    } else {
        "(output still held open by another process)".into()
    }
}

/// The single work directory of a running backup, if it exists yet.
pub fn work_dir(repo: &Path) -> Option<PathBuf> {
    names(&repo.join("sets"))
        .into_iter()
        .find(|n| n.starts_with(".work-"))
        .map(|n| repo.join("sets").join(n))
}

/// Size of `name` in the running backup's work directory.
pub fn work_file_len(repo: &Path, name: &str) -> Option<u64> {
    let dir = work_dir(repo)?;
    fs::metadata(dir.join(name)).ok().map(|m| m.len())
}

/// Stored objects (not temporaries).
pub fn object_count(repo: &Path) -> usize {
    names(&repo.join("objects"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .map(|d| names(&repo.join("objects").join(d)).len())
        .sum()
}

/// A `[mysql] dump_command` wrapper around the real mariadb-dump whose
/// output stops after its first 64 KiB (the transaction is open, the first
/// table header passed) until `release` exists; `pausing` marks the pause.
pub struct HeldDump {
    pub script: PathBuf,
    pub pausing: PathBuf,
    pub release: PathBuf,
}

impl HeldDump {
    pub fn new(dir: &Path) -> HeldDump {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("held-dump");
        let pausing = dir.join("dump-pausing");
        let release = dir.join("dump-release");
        let text = format!(
            "#!/bin/bash\nset -o pipefail\nmariadb-dump \"$@\" | \
             {{ head -c 65536; : > '{p}'; while [ ! -e '{r}' ]; do sleep 0.05; done; cat; }}\n",
            p = pausing.display(),
            r = release.display(),
        );
        fs::write(&script, text).expect("writing the dump wrapper");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        HeldDump {
            script,
            pausing,
            release,
        }
    }

    pub fn reset(&self) {
        let _ = fs::remove_file(&self.pausing);
        let _ = fs::remove_file(&self.release);
    }

    pub fn toml(&self) -> String {
        let script = toml::Value::String(self.script.display().to_string());
        format!("\n[mysql]\ndump_command = {script}\n")
    }
}
