//! Black-box tests of `kcbackup backup` and `list` for the database part:
//! a real throwaway MariaDB, the real mariadb-dump, the built binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcbackup::dump::refs::read_rows;
use kcbackup::dump::scanner::{LobInstance, SingleInstanceRow};
use kcbackup::layout::Layout;
use kcbackup::repo::manifest::Manifest;
use serde_json::Value;

fn published_sets(repo: &Path) -> Vec<String> {
    match fs::read_dir(repo.join("sets")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn hidden_entries(repo: &Path) -> Vec<String> {
    match fs::read_dir(repo.join("sets")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn run_json(config: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = common::kcbackup(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn full_backup_records_exactly_what_the_generator_wrote() {
    for layout in [Layout::FilesV1 { l1: 10, l2: 20 }, Layout::Database] {
        let (dir, store) = common::new_store(layout, |_| {});
        let repo = dir.path().join("repo");
        let config = common::write_tool_config(dir.path(), &store, &repo);
        let (code, json, stderr) = run_json(&config, &["backup", "--json", "--tag", "t1"]);
        assert_eq!(code, 0, "{layout}: {stderr}");
        let set = json["set"].as_str().expect("set id");
        assert_eq!(json["status"], "complete");
        let expected = &store.expected;
        assert_eq!(
            json["storage_backend"],
            expected.attachment_storage.as_str()
        );
        assert_eq!(
            json["kopano_version"],
            expected.kopano_version.to_string().as_str()
        );

        let set_dir = repo.join("sets").join(set);
        let manifest = Manifest::load(&set_dir).expect("manifest");
        assert_eq!(manifest.tag.as_deref(), Some("t1"));
        assert_eq!(manifest.database.findings.row_counts, expected.row_counts);
        assert_eq!(
            manifest.database.findings.server_guid.as_deref(),
            Some(expected.server_guid.as_str())
        );

        let mut rows: Vec<SingleInstanceRow> =
            read_rows(&set_dir.join(&manifest.database.references_file))
                .unwrap()
                .collect::<anyhow::Result<_>>()
                .unwrap();
        rows.sort();
        // The scanner reports NULL and '' alike as None, as Kopano treats them.
        let mut want: Vec<SingleInstanceRow> = expected
            .singleinstances
            .iter()
            .cloned()
            .map(|mut r| {
                r.filename = r.filename.filter(|f| !f.is_empty());
                r
            })
            .collect();
        want.sort();
        assert_eq!(
            rows.len(),
            want.len(),
            "{layout}: singleinstances row count"
        );
        let first_diff = rows.iter().zip(&want).find(|(a, b)| a != b);
        assert!(
            first_diff.is_none(),
            "{layout}: first differing row {first_diff:?}"
        );
        let lob: Vec<LobInstance> = read_rows(&set_dir.join(&manifest.database.lob_file))
            .unwrap()
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert!(
            lob == expected.lob,
            "{layout}: lob instances differ ({} vs {})",
            lob.len(),
            expected.lob.len()
        );

        // The stored dump (its chunks, in order) reads back to the
        // checksummed SQL text.
        assert!(manifest.database.chunk_count > 0);
        let objects = kcbackup::repo::ObjectStore::open(&repo.join("objects")).unwrap();
        let mut reader = kcbackup::repo::digest::HashReader::new(
            kcbackup::dump::reader::open(&set_dir, &manifest, &objects).unwrap(),
        );
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        let (bytes, sha) = reader.finish();
        assert_eq!(bytes, manifest.database.bytes);
        assert_eq!(sha, manifest.database.sha256);
        assert_eq!(json["db"]["sha256"], sha.as_str());
        assert_eq!(json["db"]["bytes"], bytes);

        // Owner-only permissions on everything the backup wrote.
        for entry in fs::read_dir(&set_dir).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "group/other bits in {mode:o}");
        }
        let mode = fs::metadata(&set_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(
            !manifest
                .database
                .command
                .join(" ")
                .contains(&store.db_password)
        );

        // list shows it.
        let (code, list, _) = run_json(&config, &["list", "--json"]);
        assert_eq!(code, 0);
        assert_eq!(list[0]["id"], set);
        assert_eq!(list[0]["status"], "complete");
        assert_eq!(list[0]["tag"], "t1");
    }
}

/// Every process's command line, read from /proc.
fn all_cmdlines() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Ok(raw) = fs::read(e.path().join("cmdline")) {
                out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
            }
        }
    }
    out
}

#[test]
fn the_password_never_appears_in_process_arguments_logs_or_the_set() {
    let (dir, store) = common::new_store(Layout::FilesV1 { l1: 10, l2: 20 }, |spec| {
        spec.body_bytes = 64 * 1024; // long enough to be seen running
    });
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup", "--json"])
        .env("KCBACKUP_LOG", "trace")
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut saw_dump = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for cmd in all_cmdlines() {
            assert!(!cmd.contains(&store.db_password), "password in argv: {cmd}");
            saw_dump |= cmd.contains("mariadb-dump") && cmd.contains(&store.database);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(saw_dump, "the dump process was never observed");
    for text in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(text).contains(&store.db_password));
    }
    // The credentials file is gone.
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
    for path in walk(&repo) {
        if path.extension().is_some_and(|e| e == "json") {
            let text = fs::read_to_string(&path).unwrap();
            assert!(!text.contains(&store.db_password), "{}", path.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn append_toml(config: &Path, text: &str) {
    let mut body = fs::read_to_string(config).unwrap();
    body.push('\n');
    body.push_str(text);
    fs::write(config, body).unwrap();
}

#[test]
fn unreachable_server_wrong_password_and_unknown_database_fail_cleanly() {
    let (dir, store) = common::new_store(Layout::FilesV2, |_| {});
    // A server that does not answer may answer next time (1); wrong
    // credentials or database name are the configuration's to fix (2).
    let cases: [(&str, &str, &str, i32); 3] = [
        (
            "down",
            "socket = \"/nonexistent/mysqld.sock\"",
            "connect",
            1,
        ),
        ("password", "password_file = \"PWFILE\"", "Access denied", 2),
        (
            "database",
            "database = \"no_such_kopano\"",
            "no_such_kopano",
            2,
        ),
    ];
    let pwfile = dir.path().join("wrong-password");
    fs::write(&pwfile, "not-the-password\n").unwrap();
    for (name, mysql_line, needle, want) in cases {
        let repo = dir.path().join(format!("repo-{name}"));
        let config = common::write_tool_config(dir.path(), &store, &repo);
        let line = mysql_line.replace("PWFILE", pwfile.to_str().unwrap());
        append_toml(&config, &format!("[mysql]\n{line}\n"));
        let (code, _, stderr) = run_json(&config, &["backup", "--json"]);
        assert_eq!(code, want, "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains(&store.db_password));
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one readable message: {stderr}"
        );
        assert!(
            published_sets(&repo).is_empty(),
            "{name}: a set was published"
        );
        assert!(hidden_entries(&repo).is_empty(), "{name}: work dir left");
    }
}

#[test]
fn unknown_config_key_is_a_usage_error_naming_it() {
    let (dir, store) = common::new_store(Layout::FilesV2, |_| {});
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    append_toml(&config, "[mysql]\npasword_file = \"/x\"\n");
    let (code, _, stderr) = run_json(&config, &["backup"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pasword_file"), "{stderr}");
}

/// Finds a running process whose parent is `parent` and whose argv[0] ends with `name`.
fn child_named(parent: u32, name: &str) -> Option<i32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(argv0).ends_with(name) {
            return Some(pid);
        }
    }
    None
}

fn big_store() -> (tempfile::TempDir, kcbackup::generator::GeneratedStore) {
    common::new_store(Layout::Database, |spec| {
        spec.attachment_bytes = 256 * 1024;
        spec.body_bytes = 32 * 1024;
    })
}

#[test]
fn a_dump_killed_midway_publishes_nothing() {
    let (dir, store) = big_store();
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dump_pid = loop {
        if let Some(pid) = child_named(child.id(), "mariadb-dump") {
            break pid;
        }
        assert!(Instant::now() < deadline, "no dump process seen");
        std::thread::sleep(Duration::from_millis(2));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dump_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("signal 9"), "{stderr}");
    assert!(published_sets(&repo).is_empty());
    assert!(hidden_entries(&repo).is_empty());
}

#[test]
fn a_killed_backup_leaves_no_set_and_the_next_run_clears_its_leftovers() {
    let (dir, store) = big_store();
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let tmp = dir.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child_named(child.id(), "mariadb-dump").is_none() {
        assert!(Instant::now() < deadline, "no dump process seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    let creds = |tmp: &Path| {
        fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("kcbackup-cred-")
            })
            .count()
    };
    assert_eq!(
        creds(&tmp),
        1,
        "the killed run's credentials are still there"
    );
    assert!(published_sets(&repo).is_empty());
    let (code, list, _) = run_json(&config, &["list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(list.as_array().map(|a| a.len()), Some(0));
    let leftovers = hidden_entries(&repo);
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup", "--json"])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["removed_leftovers"][0], leftovers[0].as_str());
    assert_eq!(creds(&tmp), 0, "stale credentials were not removed");
    assert!(hidden_entries(&repo).is_empty());
    assert_eq!(published_sets(&repo).len(), 1);
}

#[test]
fn a_second_concurrent_run_fails_on_the_lock() {
    let (dir, store) = big_store();
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let first = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child_named(first.id(), "mariadb-dump").is_none() {
        assert!(
            Instant::now() < deadline,
            "first run never started its dump"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (code, _, stderr) = run_json(&config, &["backup", "--json"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another kcbackup run holds the lock: backup, pid {}, since ",
            first.id()
        )),
        "{stderr}"
    );
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(published_sets(&repo).len(), 1);
}

#[test]
fn a_tampered_manifest_shows_the_set_as_damaged() {
    let (dir, store) = common::new_store(Layout::FilesV1 { l1: 7, l2: 5 }, |_| {});
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let (code, json, stderr) = run_json(&config, &["backup", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let manifest = repo
        .join("sets")
        .join(json["set"].as_str().unwrap())
        .join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replacen("\"complete\"", "\"complete\" ", 1)).unwrap();
    let (_, list, _) = run_json(&config, &["list", "--json"]);
    assert_eq!(list[0]["status"], "damaged");
}

#[test]
fn binlog_coordinates_are_recorded_when_the_server_logs_binlogs() {
    let server = kcbackup::sandbox::Sandbox::start(&kcbackup::sandbox::SandboxOptions {
        binlog: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = kcbackup::generator::StoreSpec::small(Layout::FilesV2, "kopano_binlog");
    spec.users = 2;
    let store = kcbackup::generator::generate(&server, &dir.path().join("store"), &spec).unwrap();
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let (code, json, stderr) = run_json(&config, &["backup", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let manifest = Manifest::load(&repo.join("sets").join(json["set"].as_str().unwrap())).unwrap();
    let binlog = manifest.database.binlog.expect("binlog position");
    assert!(binlog.file.contains("bin"), "{binlog:?}");
    assert!(binlog.position > 0);
    assert!(
        manifest
            .database
            .command
            .iter()
            .any(|f| f.contains("master-data") || f.contains("source-data"))
    );
}
