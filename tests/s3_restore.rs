//! Restore and drill of sets of an `s3` attachment store, against the real
//! SeaweedFS of the test harness (and moto, which keeps keys as written, for
//! hostile keys): every object PUT back matches; a bucket with objects is
//! refused without --force and its stale objects quarantined with it;
//! --to-attachments writes files by key and no key escapes; a drill passes
//! with and without a scratch bucket; a corrupted stored object fails it
//! with exit 3 and is never uploaded whole.

mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kcbackup::attachments::{IndexEntry, read_index};
use kcbackup::generator::S3Target;
use kcbackup::layout::Layout;
use kcbackup::repo::digest::sha256_hex;
use kcbackup::repo::objects::{Encoding, ObjectStore};
use kcbackup::s3::Client;
use serde_json::Value;
use support::s3server::{self, S3Server};
use support::{Env, Run, env_with, flip_byte, num, tamper, text};

/// A generated s3 store in a new bucket of `server`, backed up once.
struct Backed {
    env: Env,
    set: String,
    bucket: String,
    work: tempfile::TempDir,
}

fn backed_up(server: &S3Server, before_backup: impl FnOnce(&Client, &str, &str)) -> Backed {
    let bucket = server.bucket("src");
    let env = env_with(Layout::S3, |spec| {
        spec.s3 = Some(S3Target {
            config: server.config(),
            bucket: bucket.clone(),
        })
    });
    let prefix = format!("{}/", env.store.attachment_path.display());
    before_backup(&server.client(), &bucket, &prefix);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    let set = text(&run.json, "set").to_string();
    let work = tempfile::Builder::new().prefix("kcs3r-").tempdir().unwrap();
    for sub in ["scratch", "tmp"] {
        fs::create_dir(work.path().join(sub)).unwrap();
    }
    Backed {
        env,
        set,
        bucket,
        work,
    }
}

impl Backed {
    fn index(&self) -> Vec<IndexEntry> {
        read_index(&self.env.set_dir(&self.set).join("attachments.jsonl.zst"))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn manifest(&self) -> Value {
        let text = fs::read_to_string(self.env.set_dir(&self.set).join("manifest.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn prefix(&self) -> String {
        text(&self.manifest(), "attachments.s3.prefix").to_string()
    }

    fn restore(&self, args: &[&str]) -> Run {
        let mut all = vec!["restore", &self.set, "--json"];
        all.extend_from_slice(args);
        self.env.run_any(&all)
    }

    /// `[drill] s3_bucket = bucket` in the tool config.
    fn with_scratch_bucket(&self, bucket: &str) {
        let mut toml = fs::read_to_string(&self.env.config).unwrap();
        toml.push_str(&format!("\n[drill]\ns3_bucket = \"{bucket}\"\n"));
        fs::write(&self.env.config, toml).unwrap();
    }

    fn drill(&self) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
            .arg("--config")
            .arg(&self.env.config)
            .args(["drill", &self.set, "--json", "--scratch"])
            .arg(self.work.path().join("scratch"))
            .env("TMPDIR", self.work.path().join("tmp"))
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The stored object of the index entry `entry`, in the repository.
    fn object_file(&self, entry: &IndexEntry) -> PathBuf {
        let store = ObjectStore::open(&self.env.repo.join("objects")).unwrap();
        let sha = entry.sha256.as_deref().unwrap();
        let encoding = store
            .find(sha, entry.stored.unwrap_or(Encoding::Raw))
            .unwrap();
        store.path(sha, encoding)
    }
}

/// Every object of a bucket: key to SHA-256 of its body.
fn bucket_objects(client: &Client, bucket: &str) -> BTreeMap<String, String> {
    let mut keys = Vec::new();
    client
        .list_v2(bucket, "", &mut |info| {
            keys.push(info.key);
            Ok(())
        })
        .unwrap();
    keys.into_iter()
        .map(|key| {
            let mut body = Vec::new();
            client
                .get(bucket, &key, None)
                .unwrap()
                .reader
                .read_to_end(&mut body)
                .unwrap();
            (key, sha256_hex(&body))
        })
        .collect()
}

fn bare(key: &str) -> &str {
    key.trim_start_matches('/')
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

#[test]
fn restore_into_an_empty_bucket_puts_every_object_back() {
    if !s3server::available("restore_into_an_empty_bucket_puts_every_object_back") {
        return;
    }
    let server = s3server::shared_seaweed();
    let b = backed_up(server, |_, _, _| {});
    let target = server.bucket("dst");
    let run = b.restore(&["--to-bucket", &target]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    let index = b.index();
    assert!(index.len() > 5, "{} objects", index.len());
    assert_eq!(num(&run.json, "bucket.objects"), index.len() as u64);
    assert!(run.json["bucket"]["quarantine"].is_null());
    // SeaweedFS strips a leading `/`: compare keys without it.
    let restored: BTreeMap<String, String> = bucket_objects(&server.client(), &target)
        .into_iter()
        .map(|(k, sha)| (bare(&k).to_string(), sha))
        .collect();
    let expected: BTreeMap<String, String> = index
        .iter()
        .map(|e| (bare(&e.path).to_string(), e.sha256.clone().unwrap()))
        .collect();
    assert_eq!(restored, expected);
    // The source bucket holds the same objects.
    let source = bucket_objects(&server.client(), &b.bucket);
    assert_eq!(source.len(), restored.len());
}

#[test]
fn a_bucket_with_objects_is_refused_and_with_force_stale_ones_are_quarantined() {
    let name = "a_bucket_with_objects_is_refused_and_with_force_stale_ones_are_quarantined";
    if !s3server::available(name) {
        return;
    }
    let server = s3server::shared_seaweed();
    let b = backed_up(server, |_, _, _| {});
    let client = server.client();
    let target = server.bucket("dst");
    let prefix = b.prefix();
    let index = b.index();
    let held = &index[0];
    // A stale object the set does not hold, and one at a key the set holds
    // with other content (an instance id handed out again).
    client
        .put_bytes(&target, &format!("{prefix}999999"), b"stale")
        .unwrap();
    client
        .put_bytes(&target, &held.path, b"newer content, same id")
        .unwrap();
    let before = bucket_objects(&client, &target);

    let run = b.restore(&["--to-bucket", &target]);
    assert_eq!(run.code, 2, "{:#}\n{}", run.json, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains("--force"), "{}", run.stderr);
    assert_eq!(bucket_objects(&client, &target), before, "nothing written");

    let run = b.restore(&["--to-bucket", &target, "--force"]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    for shown in [run.json.to_string(), run.stderr.clone()] {
        assert!(!shown.contains(s3server::SECRET_KEY), "{shown}");
    }
    assert_eq!(num(&run.json, "bucket.quarantined"), 2);
    let quarantine = text(&run.json, "bucket.quarantine").to_string();
    assert!(
        quarantine.starts_with("kcbackup-quarantine-"),
        "{quarantine}"
    );
    let after = bucket_objects(&client, &target);
    let moved: BTreeMap<&str, &String> = after
        .iter()
        .filter_map(|(k, sha)| k.strip_prefix(&quarantine).map(|rest| (bare(rest), sha)))
        .collect();
    let stale_key = format!("{prefix}999999");
    assert_eq!(moved.len(), 2, "{after:#?}");
    assert_eq!(moved[bare(&stale_key)], &sha256_hex(b"stale"));
    assert_eq!(
        moved[bare(&held.path)],
        &sha256_hex(b"newer content, same id")
    );
    // Under the prefix: exactly the set's objects.
    let live: BTreeMap<&str, &String> = after
        .iter()
        .filter(|(k, _)| !k.starts_with("kcbackup-quarantine-"))
        .map(|(k, sha)| (bare(k), sha))
        .collect();
    assert_eq!(live.len(), index.len());
    for e in &index {
        assert_eq!(
            live[bare(&e.path)],
            e.sha256.as_ref().unwrap(),
            "{}",
            e.path
        );
    }
}

#[test]
fn to_attachments_writes_files_by_key_and_no_key_escapes() {
    if !s3server::available("to_attachments_writes_files_by_key_and_no_key_escapes") {
        return;
    }
    // moto keeps keys exactly as written, with their leading `/`.
    let server = s3server::shared_moto();
    let b = backed_up(server, |_, _, _| {});
    // Keys with `..` parts: a URL client resolves them before sending, so
    // no bucket of ours can hold them; an index can, so one is edited in
    // (a tampered set, or another S3 server's keys).
    let set_dir = b.env.set_dir(&b.set);
    tamper::edit_index(&set_dir, |entries| {
        let good = entries[0].clone();
        for hostile in [
            "../../../../../../kcs3r-escaped",
            "x/../../../../kcs3r-escaped2",
        ] {
            entries.push(IndexEntry {
                path: format!("{}/{hostile}", good.path.rsplit_once('/').unwrap().0),
                ..good.clone()
            });
        }
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    });
    tamper::reseal(&set_dir, |_| {});
    let index = b.index();
    assert!(index.iter().any(|e| e.path.contains("..")), "captured");
    assert!(
        index.iter().all(|e| e.path.starts_with('/')),
        "moto keeps /"
    );
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("inspect");
    let run = b.restore(&["--to-attachments", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(num(&run.json, "attachments.skipped"), 2);
    assert_eq!(num(&run.json, "attachments.files"), index.len() as u64 - 2);
    for e in index.iter().filter(|e| !e.path.contains("..")) {
        let file = dir.join(bare(&e.path));
        let data = fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert_eq!(&sha256_hex(&data), e.sha256.as_ref().unwrap(), "{}", e.path);
    }
    // Nothing beside the target, nothing anywhere above it.
    let beside: Vec<_> = fs::read_dir(outer.path()).unwrap().flatten().collect();
    assert_eq!(beside.len(), 1);
    for up in dir.ancestors() {
        for name in ["kcs3r-escaped", "kcs3r-escaped2"] {
            assert!(!up.join(name).exists(), "{}", up.join(name).display());
        }
    }
}

/// Nothing of a drill is left in its scratch and temp directories.
fn assert_clean(work: &Path) {
    for sub in ["scratch", "tmp"] {
        let left: Vec<_> = fs::read_dir(work.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in {sub}/: {left:?}");
    }
}

#[test]
fn a_drill_passes_with_and_without_a_scratch_bucket() {
    if !s3server::available("a_drill_passes_with_and_without_a_scratch_bucket") {
        return;
    }
    let server = s3server::shared_seaweed();
    let b = backed_up(server, |_, _, _| {});
    let objects = b.index().len() as u64;
    let run = b.drill();
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    for name in [
        "attachment restore",
        "attachments present",
        "attachment checksums",
    ] {
        assert_eq!(check(&run.json, name)["ok"], true, "{:#}", run.json);
    }
    assert!(num(&run.json, "referenced") > 0);
    assert_eq!(num(&run.json, "files"), objects);
    assert!(
        text(check(&run.json, "attachment restore"), "detail").contains("files by key"),
        "{:#}",
        run.json
    );
    assert_clean(b.work.path());

    let scratch = server.bucket("drill");
    b.with_scratch_bucket(&scratch);
    let run = b.drill();
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    let restore = check(&run.json, "attachment restore");
    assert!(
        text(restore, "detail").contains(&format!("into bucket {scratch}")),
        "{restore:#}"
    );
    assert_eq!(num(&run.json, "files"), objects);
    assert_eq!(check(&run.json, "attachment checksums")["ok"], true);
    assert_eq!(check(&run.json, "attachments present")["ok"], true);
    assert!(
        bucket_objects(&server.client(), &scratch).is_empty(),
        "the scratch bucket is emptied"
    );
    assert_clean(b.work.path());
}

#[test]
fn a_corrupted_stored_object_fails_the_drill_with_exit_3() {
    if !s3server::available("a_corrupted_stored_object_fails_the_drill_with_exit_3") {
        return;
    }
    let server = s3server::shared_seaweed();
    let b = backed_up(server, |_, _, _| {});
    let index = b.index();
    let victim = index.iter().max_by_key(|e| e.size).unwrap();
    flip_byte(&b.object_file(victim), -3);

    // Restore: damage, exit 3, and the object is not in the bucket whole.
    let target = server.bucket("dst");
    let run = b.restore(&["--to-bucket", &target]);
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    assert!(run.stderr.contains(&victim.path), "{}", run.stderr);
    let restored = bucket_objects(&server.client(), &target);
    let stored = server.client().head(&target, bare(&victim.path)).unwrap();
    assert!(
        !restored.keys().any(|k| bare(k) == bare(&victim.path)),
        "{stored:?} of {} bytes",
        victim.size
    );

    // Drill into a scratch bucket: fails (exit 3) naming the object.
    let scratch = server.bucket("drill");
    b.with_scratch_bucket(&scratch);
    let run = b.drill();
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(run.json["ok"], false);
    let failed = check(&run.json, "attachment restore");
    assert_eq!(failed["ok"], false);
    assert!(text(failed, "detail").contains(&victim.path), "{failed:#}");
    assert!(bucket_objects(&server.client(), &scratch).is_empty());
    assert_clean(b.work.path());
}
