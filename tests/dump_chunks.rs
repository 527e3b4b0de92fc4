//! The dump as content-defined chunks in the object store (issue 9, part 2),
//! against the real MariaDB: a night of scattered updates stores only a
//! small part of the dump again; every set reads back its recorded dump; a
//! missing or damaged chunk is named with its byte range by verify and
//! refused by restore and drill; a set written before chunking still works.

mod common;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use kcbackup::generator::nightly::{Night, add_message_flags, night};
use kcbackup::layout::Layout;
use kcbackup::repo::contents::CHUNK_LIST_FILE;
use kcbackup::repo::digest::sha256_hex;
use kcbackup::repo::manifest::{DumpChunk, Manifest};
use serde_json::Value;
use support::tamper::{chunk_file, chunks, edit_chunk_list, make_legacy, read_dump};
use support::{Env, Run, env, env_with, flip_byte, num, problems, text};

fn manifest(env: &Env, set: &str) -> Manifest {
    Manifest::load(&env.set_dir(set)).unwrap()
}

fn backup_ok(env: &Env) -> (String, Value) {
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    (text(&run.json, "set").to_string(), run.json)
}

/// `restore SET --to-database` into a new database on the shared server.
fn restore_db(env: &Env, set: &str, db: &str) -> Run {
    let pw = env.repo.parent().unwrap().join("root.pw");
    fs::write(&pw, "").unwrap();
    env.run_any(&[
        "restore",
        set,
        "--json",
        "--to-database",
        db,
        "--mysql-socket",
        common::server().socket().to_str().unwrap(),
        "--mysql-user",
        "root",
        "--mysql-password-file",
        pw.to_str().unwrap(),
    ])
}

fn database_exists(db: &str) -> bool {
    !common::query(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"
    ))
    .is_empty()
}

fn drill(env: &Env, set: &str) -> Run {
    let work = tempfile::tempdir().unwrap();
    fs::create_dir(work.path().join("scratch")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args([
            "--config",
            env.config.to_str().unwrap(),
            "drill",
            set,
            "--json",
        ])
        .arg("--scratch")
        .arg(work.path().join("scratch"))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How a finding names a chunk: its SHA-256 and the bytes of the dump it covers.
fn named(c: &DumpChunk) -> String {
    format!(
        "chunk {} (bytes {}..{} of the dump)",
        c.sha256,
        c.offset,
        c.offset + c.size
    )
}

/// A chunk from the middle of the set's dump, used by it once.
fn middle_chunk(env: &Env, set: &str) -> DumpChunk {
    let chunks = &chunks(&env.set_dir(set));
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let mid = chunks.len() / 2;
    chunks[mid..]
        .iter()
        .find(|c| chunks.iter().filter(|o| o.sha256 == c.sha256).count() == 1)
        .cloned()
        .unwrap()
}

fn assert_reads_back(env: &Env, set: &str) {
    let m = manifest(env, set);
    let sql = read_dump(&env.set_dir(set));
    assert_eq!(sql.len() as u64, m.database.bytes, "{set}");
    assert_eq!(sha256_hex(&sql), m.database.sha256, "{set}");
}

/// A store whose dump is big enough for a few hundred chunks: attachment
/// data in `lob`, as in the measurements.
fn big_env() -> Env {
    env_with(Layout::Database, |spec| {
        spec.messages_per_user = 35;
        spec.attachment_bytes = 6_000;
        spec.body_bytes = 2_000;
    })
}

#[test]
fn a_night_of_scattered_updates_stores_a_small_fraction_of_the_dump_again() {
    let mut env = big_env();
    // Delivered mail carries its flags, so a night flips them in place.
    add_message_flags(common::server(), &mut env.store).unwrap();
    let (first, report) = backup_ok(&env);
    let m1 = manifest(&env, &first);
    let chunks1 = chunks(&env.set_dir(&first));
    assert!(chunks1.len() >= 50, "{}", chunks1.len());
    assert_eq!(m1.database.chunk_count, chunks1.len() as u64);
    assert_manifest_is_small(&env, &first);
    assert!(
        m1.database.file.is_empty(),
        "no db.sql.zst for a chunked set"
    );
    assert!(!env.set_dir(&first).join("db.sql.zst").exists());
    assert_eq!(
        num(&report, "db.new_bytes"),
        num(&report, "db.stored_bytes")
    );

    let messages = night(common::server(), &mut env.store, &Night::default()).unwrap();
    assert!(messages >= 300, "{messages} messages");
    let (second, report) = backup_ok(&env);
    let m2 = manifest(&env, &second);
    assert_ne!(
        m1.database.sha256, m2.database.sha256,
        "the night changed the dump"
    );
    let before: BTreeSet<&str> = chunks1.iter().map(|c| c.sha256.as_str()).collect();
    let chunks2 = chunks(&env.set_dir(&second));
    let chunks = chunks2.len() as u64;
    let new = chunks2
        .iter()
        .filter(|c| !before.contains(c.sha256.as_str()))
        .count() as u64;
    assert_eq!(num(&report, "db.new_chunks"), new);
    assert!(
        new * 4 < chunks,
        "{new} of {chunks} chunks stored again after the night"
    );
    assert!(
        num(&report, "db.new_bytes") * 4 < num(&report, "db.stored_bytes"),
        "{report:#}"
    );
    // What `list` says each set added counts the dump chunks it stored.
    assert_eq!(m2.database.new_bytes, num(&report, "db.new_bytes"));
    let list = env.run(&["list", "--json"]);
    let added = |id: &str| {
        let line = list.json.as_array().unwrap().iter().find(|l| l["id"] == id);
        line.and_then(|l| l["added_bytes"].as_u64()).unwrap()
    };
    assert!(added(&first) >= m1.database.new_bytes, "{:#}", list.json);
    assert!(added(&second) >= m2.database.new_bytes, "{:#}", list.json);
    assert!(m1.database.new_bytes > 0 && m1.database.new_bytes == m1.database.stored_bytes);

    // Every set reads back byte for byte the dump it recorded, verifies,
    // and restores (restore checks each chunk and the whole checksum).
    for set in [&first, &second] {
        assert_reads_back(&env, set);
    }
    let v = env.verify(&second);
    assert_eq!(v.code, 0, "{:#}", v.json);
    let db = common::unique_db("chunked");
    let run = restore_db(&env, &second, &db);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(num(&run.json, "database.bytes"), m2.database.bytes);

    // The first set as the release before chunking wrote it: its own
    // db.sql.zst. It still verifies and restores.
    make_legacy(&env.set_dir(&first));
    assert!(manifest(&env, &first).database.chunk_list.is_empty());
    let v = env.verify(&first);
    assert_eq!(v.code, 0, "{:#}", v.json);
    let db = common::unique_db("legacy");
    let run = restore_db(&env, &first, &db);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(num(&run.json, "database.bytes"), m1.database.bytes);
}

#[test]
fn a_missing_chunk_is_named_refused_and_written_again_by_the_next_backup() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    let gone = middle_chunk(&env, &set);
    fs::remove_file(chunk_file(&env.set_dir(&set), &gone.sha256)).unwrap();

    let list = env.run(&["list", "--json"]);
    let listed = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == set.as_str());
    assert_eq!(listed.unwrap()["status"], "damaged", "{:#}", list.json);

    let v = env.verify(&set);
    assert_eq!(v.code, 3, "{:#}", v.json);
    let found = problems(&v.json);
    assert!(
        found
            .iter()
            .any(|p| p.contains(&named(&gone)) && p.contains("missing")),
        "{found:#?}"
    );

    let db = common::unique_db("missing");
    let run = restore_db(&env, &set, &db);
    assert_eq!(run.code, 3, "damaged set data: {}", run.stderr);
    assert!(run.stderr.contains(&named(&gone)), "{}", run.stderr);
    assert!(!database_exists(&db), "refused before anything was written");

    let d = drill(&env, &set);
    assert_eq!(d.code, 3, "{}{:#}", d.stderr, d.json);
    assert!(d.json.to_string().contains(&gone.sha256), "{:#}", d.json);

    // The database still holds that data: the next backup stores the chunk
    // again, its set is complete, and the damaged set is whole again too.
    let (next, _) = backup_ok(&env);
    assert_eq!(env.verify(&next).code, 0);
    assert_eq!(env.verify(&set).code, 0, "the chunk was written again");
}

#[test]
fn damaged_chunks_fail_the_load_and_verify_names_every_one() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    let first = chunks(&env.set_dir(&set))[0].clone();
    let later = middle_chunk(&env, &set);
    for c in [&first, &later] {
        // Inside the compressed data: the size stays, so only reading tells.
        flip_byte(&chunk_file(&env.set_dir(&set), &c.sha256), -8);
    }

    // Restore gets past the `stat` checks and stops at the first bad chunk,
    // before its bytes reach the database, naming it.
    let db = common::unique_db("flipped");
    let run = restore_db(&env, &set, &db);
    assert_eq!(run.code, 3, "damaged set data: {}", run.stderr);
    assert!(run.stderr.contains(&named(&first)), "{}", run.stderr);
    assert!(run.stderr.contains("partial load"), "{}", run.stderr);
    let tables = common::query_one(&format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'"
    ));
    assert_eq!(tables, "0", "nothing of the first chunk was loaded");

    // Verify goes on past the first bad chunk and names both (and moves
    // them aside: then they are missing).
    let v = env.verify(&set);
    assert_eq!(v.code, 3, "{:#}", v.json);
    let found = problems(&v.json);
    for c in [&first, &later] {
        assert!(
            found
                .iter()
                .any(|p| p.contains(&named(c)) && p.contains("corrupt")),
            "{}: {found:#?}",
            c.sha256
        );
        assert!(!chunk_file(&env.set_dir(&set), &c.sha256).exists());
    }
}

#[test]
fn a_drill_that_meets_a_damaged_chunk_fails_and_moves_it_aside() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    let bad = middle_chunk(&env, &set);
    let path = chunk_file(&env.set_dir(&set), &bad.sha256);
    flip_byte(&path, -8);
    let d = drill(&env, &set);
    assert_eq!(d.code, 3, "{}{:#}", d.stderr, d.json);
    let load = d.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database load")
        .cloned()
        .unwrap_or_else(|| panic!("{:#}", d.json));
    let detail = load.to_string();
    assert!(detail.contains(&named(&bad)), "{detail}");
    assert!(detail.contains("moved aside"), "{detail}");
    assert!(!path.exists(), "the corrupt chunk was moved aside");
    // The next backup writes it again; both sets verify.
    let (next, _) = backup_ok(&env);
    assert_eq!(env.verify(&next).code, 0);
    assert_eq!(env.verify(&set).code, 0);
}

#[test]
fn a_chunk_truncated_in_the_store_is_written_again_not_trusted() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    let victim = middle_chunk(&env, &set);
    let path = chunk_file(&env.set_dir(&set), &victim.sha256);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let v = env.verify(&set);
    assert_eq!(v.code, 3, "{:#}", v.json);
    // Verify moved it aside; put a truncated copy back, as a crash could
    // leave one, so only its size shows the damage to the next backup.
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (next, _) = backup_ok(&env);
    assert_eq!(env.verify(&next).code, 0, "the next set is intact");
    assert_eq!(fs::read(&path).unwrap(), bytes, "written again in full");
}

#[test]
fn a_same_size_flip_in_a_stored_chunk_is_caught_by_rolling_verification_and_written_again() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    // Every slice every backup: each reused chunk is read back.
    let mut config = fs::read_to_string(&env.config).unwrap();
    config.push_str("\n[verify]\nrolling_days = 1\n");
    fs::write(&env.config, config).unwrap();
    let (set, _) = backup_ok(&env);
    let victim = middle_chunk(&env, &set);
    let path = chunk_file(&env.set_dir(&set), &victim.sha256);
    let bytes = fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    fs::write(&path, &flipped).unwrap();
    // Its size is what the set recorded: only reading it shows the damage.
    let (next, report) = backup_ok(&env);
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&victim.sha256) && warnings.contains("written again"),
        "{warnings}"
    );
    assert_eq!(env.verify(&next).code, 0, "the new set is intact");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "written again from the dump"
    );
}

#[test]
fn a_chunk_list_with_a_gap_is_refused_before_anything_is_read() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    // One chunk left out of the list, the manifest resealed: every chunk
    // named is intact, but the list no longer makes the recorded dump.
    edit_chunk_list(&env.set_dir(&set), |chunks| {
        chunks.remove(1);
    });
    let v = env.verify(&set);
    assert_eq!(v.code, 3, "{:#}", v.json);
    let found = problems(&v.json);
    assert!(
        found
            .iter()
            .any(|p| p.contains(CHUNK_LIST_FILE) && p.contains("the chunk before it ends")),
        "{found:#?}"
    );
    let db = common::unique_db("gap");
    let run = restore_db(&env, &set, &db);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains(CHUNK_LIST_FILE), "{}", run.stderr);
    assert!(!database_exists(&db), "refused before anything was written");
}

#[test]
fn a_tampered_chunk_list_is_found_by_verify_refused_by_restore_and_stops_the_sweep() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let (set, _) = backup_ok(&env);
    assert_manifest_is_small(&env, &set);
    // The list rewritten (one chunk named twice in place of another, sizes
    // kept) but the manifest not resealed: its file list still holds the
    // list's old size and SHA-256.
    let dir = env.set_dir(&set);
    let path = dir.join(CHUNK_LIST_FILE);
    let original = fs::read(&path).unwrap();
    let mut list = chunks(&dir);
    let victim = list[1].clone();
    let size = list[2].size;
    list[2] = DumpChunk {
        offset: list[2].offset,
        size,
        ..victim.clone()
    };
    let text: String = list
        .iter()
        .map(|c| serde_json::to_string(c).unwrap() + "\n")
        .collect();
    fs::write(&path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();

    let v = env.verify(&set);
    assert_eq!(v.code, 3, "{:#}", v.json);
    let found = problems(&v.json);
    assert!(
        found
            .iter()
            .any(|p| p.contains(CHUNK_LIST_FILE) && p.contains("SHA-256")),
        "{found:#?}"
    );
    let db = common::unique_db("tamperedlist");
    let run = restore_db(&env, &set, &db);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains(CHUNK_LIST_FILE), "{}", run.stderr);
    assert!(!database_exists(&db), "refused before anything was written");

    // Garbage collection cannot know what the set needs: it stops, deletes
    // nothing, and says why.
    let objects_before = support::tamper::object_files(&env.repo).len();
    let prune = env.run_any(&["prune", "--keep-last", "1"]);
    assert_ne!(prune.code, 0, "{}", prune.stderr);
    assert!(prune.stderr.contains(CHUNK_LIST_FILE), "{}", prune.stderr);
    assert_eq!(
        support::tamper::object_files(&env.repo).len(),
        objects_before
    );

    // Put back, the set is whole again.
    fs::write(&path, original).unwrap();
    assert_eq!(env.verify(&set).code, 0);
}

/// The manifest of a chunked set carries no per-chunk entry: the list is
/// the set file the manifest names, with its size and SHA-256.
fn assert_manifest_is_small(env: &Env, set: &str) {
    let dir = env.set_dir(set);
    let raw = fs::read(dir.join("manifest.json")).unwrap();
    let json: Value = serde_json::from_slice(&raw).unwrap();
    let db = &json["database"];
    assert!(db.get("chunks").is_none(), "{db:#}");
    assert_eq!(db["chunk_list"], CHUNK_LIST_FILE);
    let count = chunks(&dir).len();
    assert_eq!(db["chunk_count"], count);
    let text = String::from_utf8_lossy(&raw);
    let first = &chunks(&dir)[0].sha256;
    assert!(
        !text.contains(first.as_str()),
        "a chunk named in the manifest"
    );
    assert!(
        json["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == CHUNK_LIST_FILE && f["sha256"].is_string()),
        "{:#}",
        json["files"]
    );
}
