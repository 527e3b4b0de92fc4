//! `kcbackup verify` against deliberately damaged repositories: every kind
//! of damage must be named and turn the exit code to 3; a clean set is 0.

mod common;
mod support;

use std::fs;

use kcbackup::layout::Layout;
use support::{Env, env, flip_byte, num, problems, text};

/// A store with a complete first set; returns the env and the set id.
fn backed_up() -> (Env, String) {
    let env = env(Layout::FilesV2);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    (env, set)
}

/// Runs verify, expects exit 3 and a problem line containing `needle`.
fn expect_problem(env: &Env, set: &str, kind: &str, needle: &str) {
    let run = env.verify(set);
    let found = problems(&run.json);
    assert_eq!(run.code, 3, "{found:#?}");
    assert_eq!(run.json["ok"], false);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{kind} ")) && p.contains(needle)),
        "no {kind} problem naming {needle} in {found:#?}"
    );
}

#[test]
fn a_clean_set_verifies_with_exit_0_and_counts_what_it_read() {
    let (env, set) = backed_up();
    let run = env.verify(&set);
    assert_eq!(run.code, 0, "{:#?}", problems(&run.json));
    let j = &run.json;
    assert_eq!(text(j, "set"), set);
    assert_eq!(j["ok"], true);
    assert_eq!(j["problems"].as_array().map(Vec::len), Some(0));
    // Every object plus the set's own files were read.
    let objects = env.object_files().len() as u64;
    assert!(num(j, "checked_files") >= objects + 4, "{j:#}");
    let stored: u64 = support::tree_bytes(&env.repo.join("objects"));
    assert!(num(j, "checked_bytes") >= stored / 2, "{j:#}");
    assert_eq!(
        num(j, "attachments.referenced"),
        env.store.expected.referenced.len() as u64
    );
    // Without a set argument: latest.
    let latest = env.run(&["verify", "--json"]);
    assert_eq!(latest.code, 0);
    assert_eq!(text(&latest.json, "set"), set);
}

#[test]
fn a_flipped_byte_in_an_object_is_named() {
    let (env, set) = backed_up();
    for object in env.object_files() {
        if fs::metadata(&object).unwrap().len() > 100 {
            flip_byte(&object, 50);
            let name = object.file_name().unwrap().to_string_lossy().into_owned();
            let sha = name.trim_end_matches(".zst");
            return expect_problem(&env, &set, "object", sha);
        }
    }
    panic!("no object of more than 100 bytes");
}

#[test]
fn a_truncated_object_is_named() {
    let (env, set) = backed_up();
    let object = env
        .object_files()
        .into_iter()
        .find(|o| fs::metadata(o).unwrap().len() > 100)
        .expect("an object");
    let bytes = fs::read(&object).unwrap();
    fs::write(&object, &bytes[..bytes.len() / 2]).unwrap();
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    expect_problem(&env, &set, "object", name.trim_end_matches(".zst"));
}

#[test]
fn a_deleted_object_is_named() {
    let (env, set) = backed_up();
    let object = env.object_files().pop().expect("an object");
    fs::remove_file(&object).unwrap();
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    expect_problem(&env, &set, "object", name.trim_end_matches(".zst"));
}

#[test]
fn an_edited_manifest_is_reported_not_a_crash() {
    let (env, set) = backed_up();
    let path = env.set_dir(&set).join("manifest.json");
    let edited = fs::read_to_string(&path)
        .unwrap()
        .replacen("\"host\": \"", "\"host\": \"x", 1);
    fs::write(&path, edited).unwrap();
    expect_problem(&env, &set, "manifest", "checksum mismatch");
    // A manifest that is no longer JSON at all is still a report.
    fs::write(&path, b"{ not json").unwrap();
    expect_problem(&env, &set, "manifest", "parsing");
}

#[test]
fn a_damaged_dump_is_named() {
    let (env, set) = backed_up();
    // A set written before chunking: its dump is the set's own file.
    support::tamper::make_legacy(&env.set_dir(&set));
    assert_eq!(env.verify(&set).code, 0, "the legacy set verifies");
    flip_byte(&env.set_dir(&set).join("db.sql.zst"), -20);
    expect_problem(&env, &set, "set-file", "db.sql.zst");
    expect_problem(&env, &set, "dump", "db.sql.zst");
}

#[test]
fn a_damaged_config_archive_and_index_are_named() {
    let (env, set) = backed_up();
    flip_byte(&env.set_dir(&set).join("config.tar.zst"), -10);
    expect_problem(&env, &set, "set-file", "config.tar.zst");
    let index = env.set_dir(&set).join("attachments.jsonl.zst");
    fs::write(&index, b"").unwrap();
    expect_problem(&env, &set, "set-file", "attachments.jsonl.zst");
}

#[test]
fn damage_to_one_set_leaves_another_intact() {
    let (env, first) = backed_up();
    let second = env.backup(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let second = text(&second.json, "set").to_string();
    flip_byte(&env.set_dir(&second).join("singleinstances.jsonl.zst"), -5);
    expect_problem(&env, &second, "set-file", "singleinstances.jsonl.zst");
    let run = env.verify(&first);
    assert_eq!(run.code, 0, "{:#?}", problems(&run.json));
}

#[test]
fn a_missing_manifest_checksum_is_reported_and_the_rest_still_checked() {
    let (env, set) = backed_up();
    fs::remove_file(env.set_dir(&set).join("manifest.json.sha256")).unwrap();
    expect_problem(&env, &set, "manifest", "manifest.json.sha256");
    // The manifest could still be read, so the objects were checked too.
    let run = env.verify(&set);
    assert!(num(&run.json, "checked_files") > 4, "{:#}", run.json);
}
