//! Shared test harness: one throwaway MariaDB server per test binary, a
//! database per test, generated Kopano stores and helpers to run kcbackup.
//! Use with `mod common;` from a file in tests/.
#![allow(dead_code)] // every test binary uses a different part of it

pub mod snapbackup;
pub mod verify;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use kcbackup::generator::{GeneratedStore, StoreSpec, generate};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use kcbackup::settings::MysqlTarget;

/// The child's stdout and stderr, read to the end on threads of their own,
/// so a test never blocks on a full pipe.
pub type Drained = Option<std::thread::JoinHandle<String>>;

pub fn drain_output(child: &mut std::process::Child) -> (Drained, Drained) {
    use std::io::Read;
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    }
    (
        child.stdout.take().map(drain),
        child.stderr.take().map(drain),
    )
}

/// The server shared by all tests of this binary. It is never dropped; the
/// sandbox's supervisor removes it when the test binary exits.
pub fn server() -> &'static Sandbox {
    static SERVER: OnceLock<Sandbox> = OnceLock::new();
    SERVER.get_or_init(|| {
        Sandbox::start(&SandboxOptions::default()).expect("starting the MariaDB sandbox")
    })
}

/// A database name no other test (of any binary running now) uses.
pub fn unique_db(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{clean}_{}_{n}", std::process::id())
}

/// Generates a small store (see `StoreSpec::small`) in its own database and
/// temporary directory; `tweak` adjusts the spec first.
pub fn new_store(
    layout: Layout,
    tweak: impl FnOnce(&mut StoreSpec),
) -> (tempfile::TempDir, GeneratedStore) {
    let dir = tempfile::Builder::new()
        .prefix("kcstore-")
        .tempdir()
        .expect("temp dir");
    let mut spec = StoreSpec::small(layout, unique_db("kc"));
    tweak(&mut spec);
    let store = generate(server(), dir.path(), &spec).expect("generating a store");
    (dir, store)
}

/// Writes `dir/kcbackup.toml` for `store` and a repository at `repo_path`.
pub fn write_tool_config(dir: &Path, store: &GeneratedStore, repo_path: &Path) -> PathBuf {
    store
        .write_tool_config(dir, repo_path)
        .expect("writing kcbackup.toml")
}

/// Whether the process is stopped (state `T` in /proc/PID/stat), e.g. by
/// `KCBACKUP_TEST_PAUSE_AT`.
pub fn is_stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// Runs the kcbackup binary.
pub fn kcbackup(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(args)
        .output()
        .expect("running kcbackup")
}

/// A MariaDB client option file for `target` in a fresh 0700 directory
/// under `dir` (mode 0600). Values are double-quoted with `\` and `"`
/// escaped, which is how option files carry any password.
pub fn client_defaults(dir: &Path, target: &MysqlTarget) -> PathBuf {
    let sub = dir.join(format!("client-{}", unique_db("d")));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&sub)
        .expect("creating option file dir");
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = format!(
        "[client]\nuser={}\npassword={}\n",
        q(&target.user),
        q(target.password.expose())
    );
    if let Some(sock) = &target.socket {
        text.push_str(&format!("socket={}\n", q(&sock.display().to_string())));
    }
    let path = sub.join("my.cnf");
    fs::write(&path, text).expect("writing option file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Runs SQL as root on the shared server; rows split at tabs.
pub fn query(sql: &str) -> Vec<Vec<String>> {
    server()
        .sql(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The single value of a one-row, one-column query.
pub fn query_one(sql: &str) -> String {
    let rows = query(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}
