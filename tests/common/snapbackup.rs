//! Real `kcbackup backup` runs with a filesystem snapshot, watched from the
//! test while the dump is held up: a dump wrapper that pauses after the
//! dump's transaction is open, the tool config naming it, and what a backup
//! must leave behind (nothing). Used by tests/backup_snapshot.rs (btrfs) and
//! tests/lvm_backup.rs (LVM, inside the VM).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kcbackup::attachments::index::read_index;
use kcbackup::generator::GeneratedStore;
use kcbackup::repo::manifest::Manifest;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long a test waits for a backup to reach a point or to end.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// A `[mysql] dump_command` wrapper: the real `mariadb-dump` with every
/// argument unchanged (the defaults file stays first), whose output stops
/// after its first 64 KiB for `pause` seconds. The first table header is in
/// those 64 KiB, so kcbackup has taken its snapshot before the pause.
pub struct SlowDump {
    pub script: PathBuf,
    /// Created when the pause begins.
    pub pausing: PathBuf,
    /// Created when the pause is over and the rest of the dump flows.
    pub resumed: PathBuf,
}

impl SlowDump {
    pub fn new(dir: &Path, pause_secs: u32) -> SlowDump {
        let script = dir.join("slow-dump");
        let pausing = dir.join("dump-pausing");
        let resumed = dir.join("dump-resumed");
        let q = |p: &Path| format!("'{}'", p.display());
        // `head -c` reads no further than it writes, so `cat` passes on the
        // rest byte for byte; pipefail keeps a failed dump a failure.
        let text = format!(
            "#!/bin/bash\nset -o pipefail\nmariadb-dump \"$@\" | \
             {{ head -c 65536; : > {p}; sleep {pause_secs}; : > {r}; cat; }}\n",
            p = q(&pausing),
            r = q(&resumed),
        );
        fs::write(&script, text).expect("writing the dump wrapper");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        SlowDump {
            script,
            pausing,
            resumed,
        }
    }

    /// Forgets an earlier run's markers.
    pub fn reset(&self) {
        let _ = fs::remove_file(&self.pausing);
        let _ = fs::remove_file(&self.resumed);
    }
}

/// Writes `dir/<method>.toml` for `store` with `[snapshot] method` and, if
/// given, the dump wrapper.
pub fn write_config(
    dir: &Path,
    store: &GeneratedStore,
    repo: &Path,
    method: &str,
    dump: Option<&SlowDump>,
) -> PathBuf {
    let mut text = store.tool_config(repo, method);
    if let Some(d) = dump {
        let script = toml::Value::String(d.script.display().to_string());
        text.push_str(&format!("\n[mysql]\ndump_command = {script}\n"));
    }
    let path = dir.join(format!("{method}.toml"));
    fs::write(&path, text).expect("writing the tool config");
    path
}

/// A `kcbackup backup --json` running in the background; its output is
/// read on threads, so a test never blocks on a full pipe.
pub struct Running {
    pub child: Child,
    pub started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a finished run returned.
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed by a signal.
    pub code: Option<i32>,
    pub json: Value,
    pub stderr: String,
    pub seconds: f64,
}

pub fn spawn_backup(config: &Path) -> Running {
    spawn_backup_env(config, &[])
}

/// [`spawn_backup`] with more environment variables for the run.
pub fn spawn_backup_env(config: &Path, env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().expect("utf-8 path")])
        .args(["backup", "--json"])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kcbackup");
    let (stdout, stderr) = super::drain_output(&mut child);
    Running {
        child,
        started: Instant::now(),
        stdout,
        stderr,
    }
}

/// Runs a backup to its end.
pub fn backup(config: &Path) -> Finished {
    spawn_backup(config).finish()
}

impl Running {
    /// Polls `cond` until it holds; panics (with kcbackup's stderr) if the
    /// backup ends first or it takes longer than [`PATIENCE`].
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let stderr = joined(self.stderr.take());
                panic!("the backup ended ({status}) before {what}: {stderr}");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gave up waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Waits for the end; a backup still running after [`PATIENCE`] is
    /// killed and the test fails (a hang is a failure, not a stuck test).
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the backup did not end within {PATIENCE:?}: {}",
                    joined(self.stderr.take())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = joined(self.stdout.take());
        Finished {
            code: status.code(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stderr: joined(self.stderr.take()),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// What a reader thread collected. A process that outlived kcbackup and
/// inherited the pipe would keep it from ending: give up after a while.
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

/// Published sets (not the hidden `.work-*` ones).
pub fn published_sets(repo: &Path) -> Vec<String> {
    sets_dir_names(repo)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Work directories of unfinished sets.
pub fn work_dirs(repo: &Path) -> Vec<String> {
    sets_dir_names(repo)
        .into_iter()
        .filter(|n| n.starts_with(".work-"))
        .collect()
}

fn sets_dir_names(repo: &Path) -> Vec<String> {
    match fs::read_dir(repo.join("sets")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Mounts (lines of /proc/self/mountinfo) of kcbackup snapshots.
pub fn snapshot_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("kcbackup-snap-"))
        .map(str::to_string)
        .collect()
}

pub fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(Sha256::digest(&data))
}

/// A referenced data file of the store: instance id, path relative to the
/// attachment tree, SHA-256 of the file as it is on disk.
#[derive(Debug, Clone)]
pub struct Victim {
    pub id: u32,
    pub rel: PathBuf,
    pub sha256: String,
}

/// `n` referenced data files spread over the store (their content hashed
/// now, before anything deletes them).
pub fn pick_victims(store: &GeneratedStore, n: usize) -> Vec<Victim> {
    let with_file: Vec<(u32, PathBuf)> = store
        .expected
        .instances
        .iter()
        .filter_map(|(id, info)| info.path.clone().map(|p| (*id, p)))
        .collect();
    assert!(with_file.len() >= n, "the store has too few data files");
    let step = with_file.len() / n;
    with_file
        .into_iter()
        .step_by(step)
        .take(n)
        .map(|(id, rel)| Victim {
            id,
            sha256: sha256_file(&store.attachment_path.join(&rel)),
            rel,
        })
        .collect()
}

/// Deletes the victims' files from the live tree, as a purge would.
pub fn delete_victims(store: &GeneratedStore, victims: &[Victim]) {
    for v in victims {
        let path = store.attachment_path.join(&v.rel);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("deleting {}: {e}", path.display()));
    }
}

/// Path -> SHA-256 of every file in a set's attachment index.
pub fn index_files(set_dir: &Path) -> BTreeMap<String, String> {
    let manifest = Manifest::load(set_dir).expect("manifest");
    read_index(&set_dir.join(&manifest.attachments.index_file))
        .expect("index")
        .map(|e| e.expect("index entry"))
        .filter_map(|e| e.sha256.map(|sha| (e.path, sha)))
        .collect()
}

/// The set's index lists each victim with its content, and the object store
/// of `repo` holds that content.
pub fn assert_victims_captured(repo: &Path, set: &str, victims: &[Victim]) {
    let set_dir = repo.join("sets").join(set);
    let index = index_files(&set_dir);
    let store = kcbackup::repo::ObjectStore::open(&repo.join("objects")).expect("object store");
    for v in victims {
        let key = v.rel.to_string_lossy().into_owned();
        assert_eq!(
            index.get(&key),
            Some(&v.sha256),
            "instance {} ({key}) not in the set's index with its content",
            v.id
        );
        assert!(store.exists(&v.sha256), "no object for {key}");
    }
}

/// The JSON number at `path` (`attachments.proof.missing`).
pub fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |at, key| &at[key])
}
