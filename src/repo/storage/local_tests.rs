use std::io::{Read, Write};

use super::*;

fn storage() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(SETS)).unwrap();
    let storage = LocalStorage::new(dir.path());
    (dir, storage)
}

fn read(storage: &LocalStorage, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    storage.get(key).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

fn listed(storage: &LocalStorage, prefix: &str) -> Vec<(String, u64)> {
    let mut keys = Vec::new();
    storage
        .list(prefix, &mut |k, n| {
            keys.push((k.to_string(), n));
            Ok(())
        })
        .unwrap();
    keys.sort();
    keys
}

#[test]
fn put_if_absent_writes_once_owner_only_and_never_replaces() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, storage) = storage();
    assert!(storage.put_if_absent("drills/a.json", b"first").unwrap());
    assert!(!storage.put_if_absent("drills/a.json", b"second").unwrap());
    assert_eq!(read(&storage, "drills/a.json"), b"first");
    let mode = fs::metadata(dir.path().join("drills/a.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file is left beside it.
    assert_eq!(fs::read_dir(dir.path().join(DRILLS)).unwrap().count(), 1);
    assert!(storage.put_if_absent("../escape", b"x").is_err());
    assert!(storage.put_if_absent("objects/.tmp/x", b"x").is_err());
}

#[test]
fn stat_list_and_delete() {
    let (dir, storage) = storage();
    let lock = storage.lock_exclusive("test").unwrap();
    assert_eq!(storage.stat("objects/ab/abc").unwrap(), None);
    storage.put_if_absent("objects/ab/abc", b"12345").unwrap();
    storage.put_if_absent("objects/cd/cde.zst", b"12").unwrap();
    storage.put_if_absent("config", b"{}").unwrap();
    // Staging areas are never listed.
    let staged = storage.stage("objects").unwrap();
    drop(staged.file);
    assert_eq!(storage.stat("objects/ab/abc").unwrap(), Some(5));
    assert_eq!(
        listed(&storage, "objects"),
        vec![
            ("objects/ab/abc".to_string(), 5),
            ("objects/cd/cde.zst".to_string(), 2)
        ]
    );
    assert!(listed(&storage, "nothing/here").is_empty());
    assert!(storage.delete(&lock, "objects/ab/abc").unwrap());
    assert!(!storage.delete(&lock, "objects/ab/abc").unwrap());
    assert_eq!(storage.stat("objects/ab/abc").unwrap(), None);
    assert!(is_not_found_err(storage.get("objects/ab/abc").err()));
    assert!(dir.path().join("objects/cd/cde.zst").is_file());
}

fn is_not_found_err(e: Option<anyhow::Error>) -> bool {
    e.is_some_and(|e| super::super::is_not_found(&e))
}

#[test]
fn commit_stores_a_batch_and_says_which_keys_are_new() {
    let (dir, storage) = storage();
    let mut batch = Vec::new();
    for (key, data) in [("objects/aa/one", "1"), ("objects/bb/two", "2")] {
        let mut staged = storage.stage("objects").unwrap();
        staged.file.write_all(data.as_bytes()).unwrap();
        batch.push((staged.path, key.to_string()));
    }
    assert_eq!(storage.commit(batch).unwrap(), vec![true, true]);
    storage.barrier().unwrap();
    // The same key again (a fresh copy of the same content): not new.
    let mut staged = storage.stage("objects").unwrap();
    staged.file.write_all(b"1").unwrap();
    let again = storage
        .commit(vec![(staged.path, "objects/aa/one".into())])
        .unwrap();
    assert_eq!(again, vec![false]);
    assert_eq!(read(&storage, "objects/aa/one"), b"1");
    assert_eq!(
        fs::read_dir(dir.path().join("objects").join(TMP_DIR))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_set_is_invisible_until_published_and_a_crash_before_the_rename_leaves_nothing() {
    let (dir, storage) = storage();
    let staging = storage.begin_set("20261201T000000Z").unwrap().unwrap();
    // The id is taken while being written.
    assert!(storage.begin_set("20261201T000000Z").unwrap().is_none());
    fs::write(staging.join("db.sql.zst"), b"dump").unwrap();
    fs::write(staging.join("manifest.json"), b"{}").unwrap();
    // A run killed here, before the rename: no set is visible.
    assert!(storage.set_ids().unwrap().is_empty());
    assert_eq!(
        storage.stat("sets/20261201T000000Z/manifest.json").unwrap(),
        None
    );
    // The next writer removes it.
    let lock = storage.lock_exclusive("backup").unwrap();
    let removed = storage.remove_leftovers(&lock).unwrap();
    assert_eq!(removed, vec![".work-20261201T000000Z".to_string()]);
    assert!(!staging.exists());

    let staging = storage.begin_set("20261201T000000Z").unwrap().unwrap();
    fs::write(staging.join("db.sql.zst"), b"dump").unwrap();
    fs::write(staging.join("manifest.json"), b"{}").unwrap();
    storage.publish_set("20261201T000000Z", &staging).unwrap();
    assert_eq!(storage.set_ids().unwrap(), vec!["20261201T000000Z"]);
    assert_eq!(read(&storage, "sets/20261201T000000Z/db.sql.zst"), b"dump");
    assert!(!staging.exists());
    assert_eq!(
        storage.set_dir("20261201T000000Z").unwrap(),
        dir.path().join("sets/20261201T000000Z")
    );
    // A published id is taken, and cannot be published over.
    assert!(storage.begin_set("20261201T000000Z").unwrap().is_none());
    let other = dir.path().join("sets/.work-x");
    fs::create_dir(&other).unwrap();
    assert!(storage.publish_set("20261201T000000Z", &other).is_err());
}

#[test]
fn move_aside_never_replaces_and_says_when_the_key_is_gone() {
    let (_dir, storage) = storage();
    storage.put_if_absent("objects/ab/abc", b"bad").unwrap();
    assert!(
        storage
            .move_aside("objects/ab/abc", "objects/.corrupt/abc")
            .unwrap()
    );
    storage
        .put_if_absent("objects/ab/abc", b"bad again")
        .unwrap();
    assert!(
        !storage
            .move_aside("objects/ab/abc", "objects/.corrupt/abc")
            .unwrap()
    );
    let gone = storage.move_aside("objects/ab/zzz", "objects/.corrupt/zzz");
    assert!(is_not_found_err(gone.err()));
}
