use std::os::unix::fs::PermissionsExt;

use super::super::contract;
use super::*;

fn storage() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(SETS)).unwrap();
    let storage = LocalStorage::new(dir.path());
    (dir, storage)
}

#[test]
fn put_if_absent_writes_once_owner_only_and_leaves_no_temporary() {
    let (dir, storage) = storage();
    contract::records_are_written_once(&storage);
    let mode = fs::metadata(dir.path().join("drills/a.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(fs::read_dir(dir.path().join(DRILLS)).unwrap().count(), 1);
}

#[test]
fn stat_list_and_delete() {
    let (_dir, storage) = storage();
    contract::stat_list_and_delete(&storage);
}

#[test]
fn commit_stores_a_batch_and_says_which_keys_are_new() {
    let (dir, storage) = storage();
    contract::commit_says_which_keys_are_new(&storage);
    let tmp = dir.path().join("objects").join(TMP_DIR);
    assert_eq!(fs::read_dir(tmp).unwrap().count(), 0, "staged copies left");
}

#[test]
fn a_set_is_invisible_until_published_and_a_crash_before_the_rename_leaves_nothing() {
    let (dir, storage) = storage();
    contract::a_set_is_visible_only_once_published(&storage);
    let id = "20261201T000000Z";
    assert_eq!(
        storage.set_dir(id).unwrap(),
        dir.path().join("sets").join(id)
    );
    // No work directory is left, and a published set cannot be published over.
    let names: Vec<_> = fs::read_dir(dir.path().join(SETS))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 1);
    let other = dir.path().join("sets/.work-x");
    fs::create_dir(&other).unwrap();
    assert!(storage.publish_set(id, &other).is_err());
}

#[test]
fn move_aside_never_replaces_and_says_when_the_key_is_gone() {
    let (dir, storage) = storage();
    contract::move_aside_never_replaces(&storage);
    assert!(dir.path().join("objects/.corrupt/abc").is_file());
}
