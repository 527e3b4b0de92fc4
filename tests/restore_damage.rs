//! `kcbackup restore` of tampered and damaged sets: paths that would write
//! outside the target are refused before anything is written (the manifest
//! resealed, so only the path checks can catch them), and a corrupted object
//! stops the restore naming the file.

mod common;
mod support;

use std::fs;
use std::path::Path;

use kcbackup::attachments::EntryKind;
use kcbackup::layout::Layout;
use support::tamper::{edit_index, object_files, paths_of_object, reseal};
use support::{Env, Run, env, flip_byte, text};

fn backed_up() -> (Env, String) {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    (env, set)
}

fn restore_tree(env: &Env, set: &str, att: &Path) -> Run {
    env.run_any(&["restore", set, "--to-attachments", att.to_str().unwrap()])
}

/// Every entry below `dir`, recursively (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    common::verify::list_files(dir)
        .into_iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// Tampers the index with `edit` on one file entry, reseals the set, then
/// expects the restore to be refused naming `needle`, with nothing written
/// into the target or at `outside`.
fn refused(edit: impl FnOnce(&mut kcbackup::attachments::IndexEntry), needle: &str) {
    let (env, set) = backed_up();
    let set_dir = env.set_dir(&set);
    let work = tempfile::tempdir().unwrap();
    let att = work.path().join("a/b/att");
    edit_index(&set_dir, |entries| {
        // A late entry, so a restore that checks as it goes would already
        // have written everything before it.
        let victim = entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == EntryKind::File)
            .unwrap();
        edit(victim);
    });
    reseal(&set_dir, |_| {});
    // The manifest matches again: verify sees no damage to the set's files.
    let verify = env.verify(&set);
    assert!(
        !support::problems(&verify.json)
            .iter()
            .any(|p| p.starts_with("manifest") || p.starts_with("set-file")),
        "{:#?}",
        support::problems(&verify.json)
    );

    let run = restore_tree(&env, &set, &att);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("refusing"), "{}", run.stderr);
    assert!(run.stderr.contains(needle), "{}", run.stderr);
    assert_eq!(
        entries(&att),
        Vec::<String>::new(),
        "written into the target"
    );
    // Nothing anywhere else in the work dir either (`escape` in a/ or above).
    assert_eq!(entries(work.path()), Vec::<String>::new());
}

#[test]
fn a_parent_path_in_the_index_is_refused() {
    refused(|e| e.path = "../../escape".into(), "../../escape");
}

#[test]
fn an_absolute_path_in_the_index_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("abs-escape");
    let path = target.to_str().unwrap().to_string();
    refused(|e| e.path = path.clone(), &path);
    assert!(!target.exists());
    assert!(entries(outside.path()).is_empty());
}

#[test]
fn a_symlink_pointing_outside_is_created_as_a_link_and_nothing_goes_through_it() {
    // Links may point anywhere (README: "Symlinks in the attachment store");
    // what a tampered set must not do is write below one.
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().to_str().unwrap().to_string();
    let (env, set) = backed_up();
    let set_dir = env.set_dir(&set);
    let mut linked = String::new();
    edit_index(&set_dir, |entries| {
        let victim = entries
            .iter_mut()
            .rev()
            .find(|e| e.kind == EntryKind::File)
            .unwrap();
        victim.kind = EntryKind::Symlink;
        victim.size = 0;
        victim.sha256 = None;
        victim.stored = None;
        victim.target = Some(link.clone());
        linked = victim.path.clone();
    });
    reseal(&set_dir, |_| {});
    let work = tempfile::tempdir().unwrap();
    let att = work.path().join("att");
    let run = restore_tree(&env, &set, &att);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(fs::read_link(att.join(&linked)).unwrap(), outside.path());
    assert!(entries(outside.path()).is_empty());

    // The same link with an entry below it: refused before anything is written.
    edit_index(&set_dir, |entries| {
        let at = entries.iter().position(|e| e.path == linked).unwrap();
        let mut below = entries[at].clone();
        below.path = format!("{linked}/escape");
        below.kind = EntryKind::Dir;
        below.target = None;
        entries.insert(at + 1, below);
    });
    reseal(&set_dir, |_| {});
    let fresh = work.path().join("fresh");
    let run = restore_tree(&env, &set, &fresh);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("refusing"), "{}", run.stderr);
    assert!(run.stderr.contains("below the symlink"), "{}", run.stderr);
    assert_eq!(entries(&fresh), Vec::<String>::new());
    assert!(entries(outside.path()).is_empty());
}

#[test]
fn a_corrupted_object_stops_the_restore_naming_the_path() {
    let (env, set) = backed_up();
    // An attachment's object: the store also holds the dump's chunks.
    let (object, paths) = object_files(&env.repo)
        .into_iter()
        .filter(|o| fs::metadata(o).unwrap().len() > 200)
        .map(|o| {
            let paths = paths_of_object(&env.set_dir(&set), &o);
            (o, paths)
        })
        .find(|(_, paths)| !paths.is_empty())
        .expect("an attachment object of more than 200 bytes");
    flip_byte(&object, 100);

    let work = tempfile::tempdir().unwrap();
    let att = work.path().join("att");
    let run = restore_tree(&env, &set, &att);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        paths.iter().any(|p| run.stderr.contains(p.as_str())),
        "none of {paths:?} named in: {}",
        run.stderr
    );
    // The bad data never lands under its name, nor as a temporary.
    for p in &paths {
        assert!(!att.join(p).exists(), "{p} was written");
    }
    assert!(
        !entries(&att)
            .iter()
            .any(|e| e.contains(".kcbackup-restore-")),
        "a temporary file was left"
    );
}

#[test]
fn a_damaged_dump_is_not_loaded() {
    let (env, set) = backed_up();
    // A set written before chunking (tests/dump_chunks.rs has the chunks).
    support::tamper::make_legacy(&env.set_dir(&set));
    flip_byte(&env.set_dir(&set).join("db.sql.zst"), -20);
    let pw = env.repo.parent().unwrap().join("root.pw");
    fs::write(&pw, "").unwrap();
    let db = common::unique_db("damaged");
    let run = env.run_any(&[
        "restore",
        &set,
        "--to-database",
        &db,
        "--mysql-socket",
        common::server().socket().to_str().unwrap(),
        "--mysql-user",
        "root",
        "--mysql-password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("db.sql.zst"), "{}", run.stderr);
    let made = common::query(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"
    ));
    assert!(made.is_empty(), "the damaged dump was loaded: {made:?}");
}
