//! "Complete" means restorable: a corrupt object is not trusted by the next
//! backup (a truncated one by `stat`, a same-size flip by rolling
//! verification), is moved to `objects/.corrupt/` and written again from
//! the live store, or the set is published incomplete when the live store
//! no longer holds the data; verify, restore and drill refuse a tampered
//! manifest with one finding; the typed layout makes stores without an
//! `attachment_storage` row, and sets written before it, drill OK.

mod common;
mod support;

use std::fs;
use std::path::{Path, PathBuf};

use kcbackup::attachments::{EntryKind, IndexEntry};
use kcbackup::layout::Layout;
use serde_json::Value;
use support::tamper::{edit_index, read_index, reseal};
use support::{Env, Run, env, flip_byte, num, text};

const FILES: Layout = Layout::FilesV1 { l1: 10, l2: 20 };

fn backup_ok(env: &Env) -> String {
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(text(&run.json, "status"), "complete");
    text(&run.json, "set").to_string()
}

/// Every backup re-reads every object (one slice).
fn roll_every_backup(env: &Env) {
    let mut config = fs::read_to_string(&env.config).unwrap();
    config.push_str("\n[verify]\nrolling_days = 1\n");
    fs::write(&env.config, config).unwrap();
}

/// A file of the set whose object no other path shares, and that object's file.
fn lone_file(env: &Env, set: &str) -> (IndexEntry, PathBuf) {
    let index = read_index(&env.set_dir(set));
    let entry = index
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.size > 100)
        .find(|e| index.iter().filter(|o| o.sha256 == e.sha256).count() == 1)
        .expect("a file with an object of its own")
        .clone();
    let sha = entry.sha256.clone().unwrap();
    let suffix = match entry.stored {
        Some(kcbackup::repo::objects::Encoding::Zst) => ".zst",
        _ => "",
    };
    let object = env
        .repo
        .join("objects")
        .join(&sha[..2])
        .join(format!("{sha}{suffix}"));
    assert!(object.is_file(), "{}", object.display());
    (entry, object)
}

fn corrupt_dir(env: &Env) -> Vec<String> {
    match fs::read_dir(env.repo.join("objects/.corrupt")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn restore_tree(env: &Env, set: &str, to: &Path) -> Run {
    env.run_any(&["restore", set, "--to-attachments", to.to_str().unwrap()])
}

fn drill(env: &Env, set: &str) -> Run {
    let scratch = tempfile::Builder::new().prefix("kcdr-").tempdir().unwrap();
    env.run_any(&[
        "drill",
        set,
        "--json",
        "--scratch",
        scratch.path().to_str().unwrap(),
    ])
}

fn drill_check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report:#}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// The set verifies, restores and drills.
fn restorable(env: &Env, set: &str) {
    let verify = env.verify(set);
    assert_eq!(verify.code, 0, "{:#?}", support::problems(&verify.json));
    let to = tempfile::tempdir().unwrap();
    let restore = restore_tree(env, set, &to.path().join("att"));
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    let drill = drill(env, set);
    assert_eq!(drill.code, 0, "{:#}\n{}", drill.json, drill.stderr);
}

#[test]
fn a_truncated_object_is_written_again_by_the_next_backup() {
    let env = env(FILES);
    let first = backup_ok(&env);
    let (_, object) = lone_file(&env, &first);
    let good = fs::read(&object).unwrap();
    fs::write(&object, &good[..good.len() / 2]).unwrap();

    // The stat of a reused object catches it: the file is read again.
    let second = env.backup(&[]);
    assert_eq!(second.code, 0, "{:#}\n{}", second.json, second.stderr);
    let set = text(&second.json, "set").to_string();
    restorable(&env, &set);
    assert_eq!(
        fs::read(&object).unwrap(),
        good,
        "the object was not rewritten"
    );
    assert_eq!(num(&second.json, "attachments.capture.reuse_refused"), 1);
    assert_eq!(corrupt_dir(&env).len(), 1, "the damaged copy is kept aside");
    // The earlier set needed the same object: whole again too.
    assert_eq!(env.verify(&first).code, 0);
}

#[test]
fn a_same_size_flip_is_caught_by_rolling_verification_and_rewritten() {
    let env = env(FILES);
    roll_every_backup(&env);
    let first = backup_ok(&env);
    let (_, object) = lone_file(&env, &first);
    let good = fs::read(&object).unwrap();
    flip_byte(&object, -3);

    let second = env.backup(&[]);
    assert_eq!(second.code, 0, "{:#}\n{}", second.json, second.stderr);
    let rolling = &second.json["attachments"]["rolling"];
    assert_eq!(num(rolling, "rolling_days"), 1);
    assert_eq!(
        rolling["corrupt"].as_array().map(Vec::len),
        Some(1),
        "{rolling:#}"
    );
    assert_eq!(num(rolling, "rewritten"), 1);
    // The cost is reported: every object of the set was re-read.
    assert!(num(rolling, "objects") > 10, "{rolling:#}");
    assert!(num(rolling, "bytes") > 0);
    assert!(rolling["seconds"].as_f64().is_some());
    assert_eq!(fs::read(&object).unwrap(), good);
    assert_eq!(corrupt_dir(&env).len(), 1);
    let set = text(&second.json, "set").to_string();
    restorable(&env, &set);
}

#[test]
fn a_corrupt_object_whose_live_data_is_gone_makes_the_set_incomplete() {
    let env = env(FILES);
    roll_every_backup(&env);
    let first = backup_ok(&env);
    let (entry, object) = lone_file(&env, &first);
    flip_byte(&object, -3);
    // The live file no longer holds that data, though its size and mtime
    // say it is unchanged (so the backup reuses its object unread).
    let live = env.store.attachment_path.join(&entry.path);
    let mtime = fs::metadata(&live).unwrap().modified().unwrap();
    let mut other = fs::read(&live).unwrap();
    other[0] ^= 0xff;
    fs::write(&live, &other).unwrap();
    fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let second = env.backup(&[]);
    assert_eq!(second.code, 3, "{:#}\n{}", second.json, second.stderr);
    assert_eq!(text(&second.json, "status"), "incomplete");
    assert!(second.stderr.contains("INCOMPLETE"), "{}", second.stderr);
    assert!(second.stderr.contains(&entry.path), "{}", second.stderr);
    let set = text(&second.json, "set").to_string();
    assert_eq!(corrupt_dir(&env).len(), 1);

    // Never `latest`; both sets need the object, so `list` shows them damaged.
    let verify = env.run_any(&["verify", "latest", "--json"]);
    assert_ne!(verify.json["set"].as_str(), Some(set.as_str()));
    let list = env.run(&["list", "--json"]);
    let lines = list.json.as_array().unwrap();
    assert_eq!(lines.len(), 2);
    for line in lines {
        assert_eq!(line["status"], "damaged", "{line:#}");
        assert!(
            line["problem"].as_str().unwrap().contains(&entry.path),
            "{line:#}"
        );
    }
}

#[test]
fn a_zeroed_stored_dump_checksum_is_refused_alike_by_verify_restore_and_drill() {
    let env = env(FILES);
    let set = backup_ok(&env);
    // A set written before chunking: its dump is a file of the set.
    support::tamper::make_legacy(&env.set_dir(&set));
    let zero = "0".repeat(64);
    reseal(&env.set_dir(&set), |m| {
        m["database"]["stored_sha256"] = zero.clone().into();
    });

    let verify = env.verify(&set);
    assert_eq!(verify.code, 3);
    let finding = support::problems(&verify.json)
        .into_iter()
        .find(|p| p.contains("database.stored_sha256"))
        .unwrap_or_else(|| panic!("{:#?}", support::problems(&verify.json)));
    let detail = finding.split_once(": ").unwrap().1.to_string();
    assert!(detail.contains(&zero), "{detail}");

    let db = common::unique_db("zeroed");
    let restore = env.run_any(&["restore", &set, "--to-database", &db]);
    assert_eq!(restore.code, 3, "{}", restore.stderr);
    assert!(
        restore.stderr.contains(&detail),
        "{}\n{detail}",
        restore.stderr
    );

    let drill = drill(&env, &set);
    assert_eq!(drill.code, 3, "{:#}", drill.json);
    let check = drill_check(&drill.json, "restorable");
    assert_eq!(check["ok"], false);
    assert!(
        check["detail"].as_str().unwrap().contains(&detail),
        "{check:#}"
    );
}

/// Removes the `attachment_storage` row, as older Kopano stores lack it.
fn drop_storage_row(env: &Env) {
    common::query(&format!(
        "DELETE FROM `{}`.settings WHERE name = 'attachment_storage'",
        env.store.database
    ));
}

#[test]
fn a_store_without_an_attachment_storage_row_backs_up_verifies_and_drills() {
    let env = env(FILES);
    drop_storage_row(&env);
    let set = backup_ok(&env);
    let verify = env.verify(&set);
    assert_eq!(verify.code, 0, "{:#?}", support::problems(&verify.json));
    let drill = drill(&env, &set);
    assert_eq!(drill.code, 0, "{:#}", drill.json);
    assert_eq!(drill_check(&drill.json, "attachments present")["ok"], true);
    let manifest: Value =
        serde_json::from_slice(&fs::read(env.set_dir(&set).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["kopano"]["storage_backend"], Value::Null);
    assert_eq!(manifest["kopano"]["layout"], "files");
}

#[test]
fn a_set_written_before_the_typed_layout_still_verifies_restores_and_drills() {
    let env = env(Layout::FilesV1 { l1: 7, l2: 5 });
    drop_storage_row(&env);
    let set = backup_ok(&env);
    // As the current release writes it: no typed layout in the manifest, no
    // stored sizes in the index; the layout only in the names it kept.
    let dir = env.set_dir(&set);
    edit_index(&dir, |entries| {
        for e in entries {
            e.stored_bytes = None;
        }
    });
    reseal(&dir, |m| {
        m["kopano"].as_object_mut().unwrap().remove("layout");
        m["attachments"].as_object_mut().unwrap().remove("rolling");
    });
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kopano"].get("layout"), None);
    assert_eq!(manifest["kopano"]["storage_backend"], Value::Null);
    restorable(&env, &set);
    // And the next backup builds on it.
    let next = backup_ok(&env);
    assert_eq!(env.verify(&next).code, 0);
}
