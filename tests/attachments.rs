//! Attachments and config into the repository, against a real MariaDB and
//! real generated stores of every layout: the proof's counts, missing data,
//! corrupt files_v2 content, and the cost of a second (incremental) backup.

mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use kcbackup::generator::{self, GeneratedStore};
use kcbackup::layout::Layout;
use kcbackup::repo::digest::file_digest;
use support::{Env, env, num, text};

const FILES: Layout = Layout::FilesV1 { l1: 10, l2: 20 };
const FILES_16_8: Layout = Layout::FilesV1 { l1: 16, l2: 8 };

/// Every file of the attachment tree with its size.
fn tree(store: &GeneratedStore) -> BTreeMap<PathBuf, u64> {
    let root = &store.attachment_path;
    common::verify::list_files(root)
        .into_iter()
        .map(|rel| {
            let size = fs::metadata(root.join(&rel)).map(|m| m.len()).unwrap_or(0);
            (rel, size)
        })
        .collect()
}

/// The proof the generator's record predicts for `layout`.
fn expected_extra(store: &GeneratedStore) -> u64 {
    let e = &store.expected;
    match store.spec.layout {
        // files_v2 extras are directories: one `content` each.
        Layout::FilesV2 => e
            .extra_files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "content"))
            .count() as u64,
        _ => e.extra_files.len() as u64,
    }
}

fn complete_backup_matches_the_generator(layout: Layout) {
    let env = env(layout);
    let e = &env.store.expected;
    assert!(
        e.referenced.len() > 50,
        "the store is too small to mean much"
    );
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = &run.json;
    assert_eq!(text(j, "status"), "complete");
    assert_eq!(text(j, "attachments.layout"), layout.to_string());
    assert_eq!(num(j, "attachments.referenced"), e.referenced.len() as u64);
    assert_eq!(num(j, "attachments.present"), e.referenced.len() as u64);
    assert_eq!(num(j, "attachments.missing"), 0);
    assert_eq!(num(j, "attachments.corrupt"), 0);
    assert_eq!(num(j, "attachments.extra"), expected_extra(&env.store));
    assert_eq!(
        num(j, "attachments.leftovers"),
        e.leftover_files.len() as u64
    );
    assert_eq!(num(j, "attachments.unrecognised"), 0);
    let files = tree(&env.store);
    assert_eq!(num(j, "attachments.capture.files"), files.len() as u64);
    assert_eq!(
        num(j, "attachments.capture.bytes"),
        files.values().sum::<u64>()
    );
    if layout == Layout::Database {
        let lob_ids: std::collections::BTreeSet<u32> = e.lob.iter().map(|l| l.instanceid).collect();
        assert_eq!(num(j, "attachments.data_files"), lob_ids.len() as u64);
    }

    // The manifest says the same, and lists the index and config archive.
    let set = text(j, "set");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(env.set_dir(set).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["attachments"], j["attachments"]);
    let listed: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in ["attachments.jsonl.zst", "config.tar.zst"] {
        assert!(listed.contains(&name), "{name} not in {listed:?}");
    }
    // The dump is in the object store as chunks, not a file of the set.
    assert!(!listed.contains(&"db.sql.zst"), "{listed:?}");
    assert!(manifest["database"]["chunk_count"].as_u64().unwrap() > 0);
    assert!(listed.contains(&"dump.chunks.jsonl.zst"), "{listed:?}");
    assert!(manifest["database"].get("chunks").is_none());
    let (_, cfg_sha) = file_digest(&env.store.server_cfg).unwrap();
    let entries = manifest["config"]["entries"].as_array().unwrap();
    let server_cfg = entries
        .iter()
        .find(|e| e["path"] == "server.cfg")
        .expect("server.cfg in the manifest's config entries");
    assert_eq!(server_cfg["sha256"].as_str(), Some(cfg_sha.as_str()));
    assert_eq!(env.verify(set).code, 0);
}

#[test]
fn complete_backup_files() {
    complete_backup_matches_the_generator(FILES);
}

#[test]
fn complete_backup_files_v1_16_8() {
    complete_backup_matches_the_generator(FILES_16_8);
}

#[test]
fn complete_backup_files_v2() {
    complete_backup_matches_the_generator(Layout::FilesV2);
}

#[test]
fn complete_backup_database() {
    complete_backup_matches_the_generator(Layout::Database);
}

/// Removes the data of one referenced instance from the live store.
fn remove_one_instance(env: &Env) -> u32 {
    let (&id, info) = env
        .store
        .expected
        .instances
        .iter()
        .nth(7)
        .expect("an instance");
    match &info.path {
        Some(rel) => fs::remove_file(env.store.attachment_path.join(rel)).unwrap(),
        None => {
            common::query(&format!(
                "DELETE FROM `{}`.lob WHERE instanceid = {id}",
                env.store.database
            ));
        }
    }
    id
}

fn missing_data_makes_the_set_incomplete(layout: Layout) {
    let env = env(layout);
    let first = env.backup(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let id = remove_one_instance(&env);

    let second = env.backup(&[]);
    assert_eq!(second.code, 3, "{}", second.stderr);
    let j = &second.json;
    assert_eq!(text(j, "status"), "incomplete");
    assert!(num(j, "attachments.missing") >= 1);
    let missing: Vec<u64> = j["attachments"]["missing_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(missing.contains(&u64::from(id)), "{id} not in {missing:?}");
    assert!(second.stderr.contains(&id.to_string()), "{}", second.stderr);

    // Verify agrees, and the earlier set is still good (and still "latest").
    let bad = env.verify(text(j, "set"));
    assert_eq!(bad.code, 3);
    assert!(
        support::problems(&bad.json)
            .iter()
            .any(|p| p.starts_with(&format!("attachment-missing instance {id}:")))
    );
    let good = env.verify(text(&first.json, "set"));
    assert_eq!(good.code, 0, "{:?}", support::problems(&good.json));
    let latest = env.verify("latest");
    assert_eq!(text(&latest.json, "set"), text(&first.json, "set"));
}

#[test]
fn missing_data_files() {
    missing_data_makes_the_set_incomplete(FILES);
}

#[test]
fn missing_data_files_v1_16_8() {
    missing_data_makes_the_set_incomplete(FILES_16_8);
}

#[test]
fn missing_data_files_v2() {
    missing_data_makes_the_set_incomplete(Layout::FilesV2);
}

#[test]
fn missing_data_database() {
    missing_data_makes_the_set_incomplete(Layout::Database);
}

fn second_backup_costs_what_is_new(layout: Layout) {
    let mut env = env(layout);
    let first = env.backup(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before_tree = tree(&env.store);
    let before_objects = env.objects_bytes();
    let attachments = env.store.expected.referenced.len() as u32;
    generator::add_attachments(common::server(), &mut env.store, attachments / 100 + 1, 7).unwrap();
    let after_tree = tree(&env.store);
    let new_files: Vec<&PathBuf> = after_tree
        .keys()
        .filter(|p| !before_tree.contains_key(*p))
        .collect();
    let new_bytes: u64 = new_files.iter().map(|p| after_tree[*p]).sum();

    let second = env.backup(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let j = &second.json;
    // Only the new files are read; everything else is taken from the first set.
    assert_eq!(
        num(j, "attachments.capture.read_files"),
        new_files.len() as u64
    );
    assert_eq!(
        num(j, "attachments.capture.reused"),
        before_tree.len() as u64
    );
    // The dump's new chunks are objects too; counted apart.
    let grown = env.objects_bytes() - before_objects - num(j, "db.new_bytes");
    assert_eq!(grown, num(j, "attachments.capture.written_bytes"));
    assert!(
        grown <= new_bytes + 4096,
        "objects grew by {grown} bytes for {new_bytes} bytes of new files"
    );
    assert!(
        grown * 20 <= before_objects.max(1),
        "objects grew by {grown} of {before_objects} bytes: more than 5% for 1% new attachments"
    );

    // --rehash reads everything again and still writes nothing new.
    let third = env.backup(&["--rehash"]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(
        num(&third.json, "attachments.capture.read_files"),
        after_tree.len() as u64
    );
    assert_eq!(num(&third.json, "attachments.capture.new_objects"), 0);
}

#[test]
fn second_backup_files() {
    second_backup_costs_what_is_new(FILES);
}

#[test]
fn second_backup_files_v1_16_8() {
    second_backup_costs_what_is_new(FILES_16_8);
}

#[test]
fn second_backup_files_v2() {
    second_backup_costs_what_is_new(Layout::FilesV2);
}

#[test]
fn second_backup_database() {
    second_backup_costs_what_is_new(Layout::Database);
}

#[test]
fn files_v2_content_that_does_not_match_its_hash_is_corrupt() {
    let env = env(Layout::FilesV2);
    let content = env
        .store
        .expected
        .data_files
        .first()
        .expect("a content file")
        .clone();
    let path = env.store.attachment_path.join(&content);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&path, bytes).unwrap();

    let run = env.backup(&[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(num(&run.json, "attachments.corrupt"), 1);
    let paths = run.json["attachments"]["corrupt_paths"].as_array().unwrap();
    assert_eq!(paths[0].as_str(), content.to_str());
    assert!(num(&run.json, "attachments.missing") >= 1);
    let verify = env.verify(text(&run.json, "set"));
    assert_eq!(verify.code, 3);
    assert!(
        support::problems(&verify.json)
            .iter()
            .any(|p| p.starts_with(&format!("attachment-corrupt {}", content.display())))
    );
}

#[test]
fn s3_without_its_settings_is_refused_with_exit_2_and_nothing_published() {
    let env = env(FILES);
    common::query(&format!(
        "UPDATE `{}`.settings SET value = 's3' WHERE name = 'attachment_storage'",
        env.store.database
    ));
    let out = common::kcbackup(&["--config", env.config.to_str().unwrap(), "backup"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // server.cfg has no attachment_s3_* keys: the endpoint is what is missing.
    assert!(stderr.contains("attachment_s3_hostname"), "{stderr}");
    // Refused before the dump: not even the repository is created.
    let sets = fs::read_dir(env.repo.join("sets")).map_or(0, |d| d.count());
    assert_eq!(sets, 0, "a set was published or left behind");
}
