//! A repository written by the release before `config` existed (format 1,
//! committed under tests/fixtures/repo-format1/) keeps working: its sets
//! list, verify, restore and drill, and a new backup into it writes
//! `config` while the old sets still verify.

mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kcbackup::layout::Layout;
use sha2::{Digest, Sha256};

/// The spec of the fixture's store: small, so the fixture stays a few KB.
fn fixture_spec(spec: &mut kcbackup::generator::StoreSpec) {
    spec.users = 2;
    spec.messages_per_user = 3;
    spec.max_attachments_per_message = 2;
    spec.attachment_bytes = 1500;
    spec.body_bytes = 200;
    spec.lob_chunk = 1024;
    spec.extras = 1;
}

/// SHA-256 of every file below `root`, by relative path.
fn file_digests(root: &Path) -> BTreeMap<String, String> {
    common::verify::list_files(root)
        .into_iter()
        .map(|rel| {
            let bytes = fs::read(root.join(&rel)).unwrap();
            (
                rel.display().to_string(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect()
}

/// Writes the fixture with the binary of this build:
/// `KC_FIXTURE_OUT=dir cargo test --test repo_format -- --ignored make_fixture`.
/// Kept for the record of how tests/fixtures/repo-format1/ was made (with
/// the release before `config`, commit 3bbefd8).
#[test]
#[ignore]
fn make_fixture() {
    let out = std::path::PathBuf::from(std::env::var("KC_FIXTURE_OUT").expect("KC_FIXTURE_OUT"));
    let layout = Layout::FilesV1 { l1: 10, l2: 20 };
    let (_store_dir, store) = common::new_store(layout, fixture_spec);
    let dir = tempfile::tempdir().unwrap();
    let repo = out.join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let backup = || {
        let run = common::kcbackup(&["--config", config.to_str().unwrap(), "backup", "--json"]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        // Set ids are seconds: the second backup gets its own.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    };
    backup();
    backup();
    let expected = serde_json::json!({
        "row_counts": store.expected.row_counts,
        "attachments": file_digests(&store.attachment_path),
        "config": file_digests(&store.config_dir),
    });
    fs::write(
        out.join("expected.json"),
        serde_json::to_vec_pretty(&expected).unwrap(),
    )
    .unwrap();
}

/// The fixture's repository copied into `dir/repo` (git keeps neither empty
/// directories nor modes: both as kcbackup writes them), and a tool config
/// for a fresh store of the same shape that points at it.
struct Format1 {
    _store_dir: tempfile::TempDir,
    dir: tempfile::TempDir,
    store: kcbackup::generator::GeneratedStore,
    repo: std::path::PathBuf,
    config: std::path::PathBuf,
    expected: serde_json::Value,
}

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-format1")
}

fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

fn format1() -> Format1 {
    let (store_dir, store) = common::new_store(Layout::FilesV1 { l1: 10, l2: 20 }, fixture_spec);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_tree(&fixture().join("repo"), &repo);
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let expected =
        serde_json::from_slice(&fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    Format1 {
        _store_dir: store_dir,
        dir,
        store,
        repo,
        config,
        expected,
    }
}

struct Run {
    code: i32,
    json: serde_json::Value,
    stderr: String,
}

impl Format1 {
    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = common::kcbackup(&all);
        Run {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn set_ids(&self) -> Vec<String> {
        let list = self.run(&["list", "--json"]);
        assert_eq!(list.code, 0, "{}", list.stderr);
        list.json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["status"], "complete", "{s:#}");
                s["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn verifies(&self, set: &str) {
        let verify = self.run(&["verify", set, "--json"]);
        assert_eq!(
            verify.code, 0,
            "{set}: {:#}\n{}",
            verify.json, verify.stderr
        );
    }
}

#[test]
fn a_format_1_repository_lists_verifies_restores_and_drills() {
    let f = format1();
    let sets = f.set_ids();
    assert_eq!(sets.len(), 2, "{sets:?}");
    for set in &sets {
        f.verifies(set);
    }

    // Restore the newest: the database and the attachments come back.
    let pw = f.dir.path().join("root.pw");
    fs::write(&pw, "\n").unwrap();
    let socket = common::server().socket().to_str().unwrap().to_string();
    let db = common::unique_db("format1");
    let att = f.dir.path().join("restored-attachments");
    let cfg = f.dir.path().join("restored-config");
    let restore = f.run(&[
        "restore",
        "latest",
        "--json",
        "--mysql-user",
        "root",
        "--mysql-socket",
        &socket,
        "--mysql-password-file",
        pw.to_str().unwrap(),
        "--to-database",
        &db,
        "--to-attachments",
        att.to_str().unwrap(),
        "--to-config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(restore.code, 0, "{:#}\n{}", restore.json, restore.stderr);
    let rows = f.expected["row_counts"].as_object().unwrap();
    assert!(rows.len() >= 8, "{rows:?}");
    for (table, n) in rows {
        let got = common::query_one(&format!("SELECT COUNT(*) FROM `{db}`.`{table}`"));
        assert_eq!(got, n.to_string(), "rows of {table}");
    }
    let want = |what: &str| -> BTreeMap<String, String> {
        serde_json::from_value(f.expected[what].clone()).unwrap()
    };
    assert_eq!(file_digests(&att), want("attachments"));
    assert_eq!(file_digests(&cfg), want("config"));

    // A drill of the older set passes, and `list` shows it.
    let scratch = tempfile::Builder::new().prefix("kcdr-").tempdir().unwrap();
    let drill = f.run(&[
        "drill",
        &sets[0],
        "--json",
        "--scratch",
        scratch.path().to_str().unwrap(),
    ]);
    assert_eq!(drill.code, 0, "{:#}\n{}", drill.json, drill.stderr);
    let list = f.run(&["list", "--json"]);
    assert_eq!(list.json[0]["last_drill"]["ok"], true, "{:#}", list.json);
    // Reading never turned it into the new format.
    assert!(!f.repo.join("config").exists());
}

#[test]
fn a_backup_into_a_format_1_repository_writes_config_and_old_sets_still_verify() {
    use std::os::unix::fs::PermissionsExt;
    let f = format1();
    let old = f.set_ids();
    let backup = f.run(&["backup", "--json"]);
    assert_eq!(backup.code, 0, "{:#}\n{}", backup.json, backup.stderr);
    let new = backup.json["set"].as_str().unwrap().to_string();

    let path = f.repo.join("config");
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the config is owner-only");
    let config: kcbackup::repo::config::RepoConfig =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(config.format, kcbackup::repo::config::REPO_FORMAT);
    assert_eq!(config.id.len(), 32, "{config:?}");
    assert!(config.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(config.created_by.starts_with("kcbackup "), "{config:?}");
    assert_eq!(config.chunker, Default::default());

    // Write-once: a second backup leaves it as it is.
    let before = fs::read(&path).unwrap();
    let again = f.run(&["backup", "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(fs::read(&path).unwrap(), before);

    let all = f.set_ids();
    assert_eq!(all.len(), old.len() + 2, "{all:?}");
    for set in old.iter().chain([&new]) {
        f.verifies(set);
    }
    drop(f.store);
}

#[test]
fn a_repository_of_a_newer_format_is_refused_with_one_line() {
    let f = format1();
    let mut config = serde_json::json!({
        "format": kcbackup::repo::config::REPO_FORMAT + 1,
        "id": "00",
        "something": "a later release added",
    });
    config["created_by"] = "kcbackup 99".into();
    fs::write(f.repo.join("config"), config.to_string()).unwrap();
    for args in [vec!["list"], vec!["verify", "latest"], vec!["backup"]] {
        let run = f.run(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].contains("newer than kcbackup"), "{}", lines[0]);
    }
}
