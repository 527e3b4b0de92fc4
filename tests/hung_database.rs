//! A hung database server (its real `mariadbd` SIGSTOPped) must not hang the
//! backup with the repository lock held: kcbackup's own queries are bounded
//! by `[mysql] connect_timeout_s`, the dump by `[mysql] stall_timeout_s`.
//! Each test stops its own throwaway server, never the shared one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kcbackup::generator::{self, GeneratedStore, StoreSpec};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A server of its own with a store whose dump is several MiB (far more
/// than the pipe and socket buffers between the server and kcbackup).
fn own_server(dir: &Path) -> (Sandbox, GeneratedStore) {
    let server = Sandbox::start(&SandboxOptions::default()).expect("a sandbox server");
    let mut spec = StoreSpec::small(Layout::Database, "kopano_hung");
    spec.users = 4;
    spec.attachment_bytes = 64 * 1024;
    let store = generator::generate(&server, &dir.join("store"), &spec).expect("a store");
    (server, store)
}

/// SIGCONTs the server when dropped, so a failing test leaves no stopped server.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

/// Runs kcbackup; a run still going after two minutes is killed and fails
/// the test (a hang guard, not a timing assertion).
fn run(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kcbackup {args:?} hung: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing published, no work directory, no lock holder record, and the
/// lock is free: the next backup succeeds.
fn assert_failed_cleanly(out: &Output, repo: &Path, setting: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("refused as expected: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(setting), "names the setting: {stderr}");
    assert!(stderr.contains("no set was published"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
    assert!(
        entries(&repo.join("sets")).is_empty(),
        "set or work dir left"
    );
    assert!(
        entries(&repo.join("holders")).is_empty(),
        "holder record left"
    );
}

fn backup_succeeds(config: &Path, repo: &Path) {
    let out = run(config, &["backup", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "complete");
    assert_eq!(entries(&repo.join("sets")).len(), 1);
}

fn config_with(dir: &Path, store: &GeneratedStore, mysql: &str) -> (PathBuf, PathBuf) {
    let repo = dir.join("repo");
    let config = store.write_tool_config(dir, &repo).unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[mysql]\n{mysql}\n"));
    fs::write(&config, text).unwrap();
    (config, repo)
}

#[test]
fn a_server_stopped_before_the_first_query_times_out_naming_connect_timeout_s() {
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = own_server(dir.path());
    let (config, repo) = config_with(dir.path(), &store, "connect_timeout_s = 2");
    let stopped = Stopped::stop(server.mariadbd_pid());
    let out = run(&config, &["backup"]);
    assert_failed_cleanly(&out, &repo, "[mysql] connect_timeout_s");
    drop(stopped);
    backup_succeeds(&config, &repo);
}

#[test]
fn a_server_stopped_mid_dump_times_out_naming_stall_timeout_s() {
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = own_server(dir.path());
    // The real mariadb-dump, through a wrapper that stops the server once
    // 64 KiB of the dump have passed (the first time only): the dump is then
    // surely in the middle, whatever the machine's speed.
    let once = dir.path().join("stopped-once");
    let wrapper = dir.path().join("dump-then-stop");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             if [ -e '{once}' ]; then exec mariadb-dump \"$@\"; fi\n\
             touch '{once}'\n\
             mariadb-dump \"$@\" | {{ head -c 65536; kill -STOP {pid}; cat; }}\n",
            once = once.display(),
            pid = server.mariadbd_pid()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let (config, repo) = config_with(
        dir.path(),
        &store,
        &format!(
            "stall_timeout_s = 2\ndump_command = \"{}\"",
            wrapper.display()
        ),
    );
    // Whatever happens below, the server is continued at the end.
    let stopped = Stopped(server.mariadbd_pid());
    let out = run(&config, &["backup"]);
    assert!(once.exists(), "the wrapper ran");
    assert_failed_cleanly(&out, &repo, "[mysql] stall_timeout_s");
    // The dump's whole process group is gone: no wrapper, dump or `cat`.
    let wrapper_name = wrapper.display().to_string();
    let left: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&wrapper_name))
        .collect();
    assert!(left.is_empty(), "dump processes left: {left:?}");
    drop(stopped);
    backup_succeeds(&config, &repo);
}

#[test]
fn a_zero_timeout_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("kopano");
    fs::create_dir_all(&store_dir).unwrap();
    fs::write(store_dir.join("server.cfg"), "mysql_database = kopano\n").unwrap();
    let config = dir.path().join("kcbackup.toml");
    fs::write(
        &config,
        format!(
            "[kopano]\nserver_cfg = \"{}\"\n[mysql]\nstall_timeout_s = 0\n",
            store_dir.join("server.cfg").display()
        ),
    )
    .unwrap();
    let out = run(&config, &["backup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[mysql] stall_timeout_s = 0"), "{stderr}");
}
