//! The storage contract as checks on any [`Storage`]: the local
//! implementation runs them in its unit tests, an object-storage one
//! (issue 14) runs the same against its test server.

use std::io::{Read, Write};

use super::{Storage, is_not_found};

pub fn read(storage: &dyn Storage, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    storage.get(key).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

pub fn listed(storage: &dyn Storage, prefix: &str) -> Vec<(String, u64)> {
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

/// A record is written once: a second put leaves the first.
pub fn records_are_written_once(s: &dyn Storage) {
    assert!(s.put_if_absent("drills/a.json", b"first").unwrap());
    assert!(!s.put_if_absent("drills/a.json", b"second").unwrap());
    assert_eq!(read(s, "drills/a.json"), b"first");
    assert_eq!(listed(s, "drills"), vec![("drills/a.json".into(), 5)]);
    assert!(s.put_if_absent("../escape", b"x").is_err());
    assert!(s.put_if_absent("objects/.tmp/x", b"x").is_err());
}

/// Stat, list (staging never listed) and delete.
pub fn stat_list_and_delete(s: &dyn Storage) {
    let lock = s.lock_exclusive("test", std::time::Duration::ZERO).unwrap();
    assert_eq!(s.stat("objects/ab/abc").unwrap(), None);
    s.put_if_absent("objects/ab/abc", b"12345").unwrap();
    s.put_if_absent("objects/cd/cde.zst", b"12").unwrap();
    s.put_if_absent("config", b"{}").unwrap();
    let staged = s.stage("objects").unwrap();
    drop(staged.file);
    assert_eq!(s.stat("objects/ab/abc").unwrap(), Some(5));
    assert_eq!(
        listed(s, "objects"),
        vec![
            ("objects/ab/abc".to_string(), 5),
            ("objects/cd/cde.zst".to_string(), 2)
        ]
    );
    assert!(listed(s, "nothing/here").is_empty());
    assert!(s.delete(&lock, "objects/ab/abc").unwrap());
    assert!(!s.delete(&lock, "objects/ab/abc").unwrap());
    assert_eq!(s.stat("objects/ab/abc").unwrap(), None);
    assert!(
        s.get("objects/ab/abc")
            .err()
            .is_some_and(|e| is_not_found(&e))
    );
    assert_eq!(s.stat("objects/cd/cde.zst").unwrap(), Some(2));
}

/// A committed batch is stored; a key committed again is not new.
pub fn commit_says_which_keys_are_new(s: &dyn Storage) {
    let mut batch = Vec::new();
    for (key, data) in [("objects/aa/one", "1"), ("objects/bb/two", "2")] {
        let mut staged = s.stage("objects").unwrap();
        staged.file.write_all(data.as_bytes()).unwrap();
        batch.push((staged.path, key.to_string()));
    }
    assert_eq!(s.commit(batch).unwrap(), vec![true, true]);
    s.barrier().unwrap();
    let mut staged = s.stage("objects").unwrap();
    staged.file.write_all(b"1").unwrap();
    let again = s
        .commit(vec![(staged.path, "objects/aa/one".into())])
        .unwrap();
    assert_eq!(again, vec![false]);
    assert_eq!(read(s, "objects/aa/one"), b"1");
    assert_eq!(read(s, "objects/bb/two"), b"2");
}

/// A set is invisible until published; one killed before publishing
/// leaves nothing visible and goes with the next writer's leftovers.
pub fn a_set_is_visible_only_once_published(s: &dyn Storage) {
    const ID: &str = "20261201T000000Z";
    let staging = s.begin_set(ID).unwrap().unwrap();
    assert!(s.begin_set(ID).unwrap().is_none(), "taken while written");
    std::fs::write(staging.join("db.sql.zst"), b"dump").unwrap();
    std::fs::write(staging.join("manifest.json"), b"{}").unwrap();
    // A run killed here, before publishing: no set, no file of it.
    assert!(s.set_ids().unwrap().is_empty());
    assert_eq!(s.stat(&format!("sets/{ID}/manifest.json")).unwrap(), None);
    assert_eq!(s.stat(&format!("sets/{ID}/db.sql.zst")).unwrap(), None);
    {
        let lock = s
            .lock_exclusive("backup", std::time::Duration::ZERO)
            .unwrap();
        let removed = s.remove_leftovers(&lock).unwrap();
        assert_eq!(removed, vec![format!(".work-{ID}")]);
    }
    assert!(!staging.exists());

    let staging = s.begin_set(ID).unwrap().unwrap();
    std::fs::write(staging.join("db.sql.zst"), b"dump").unwrap();
    std::fs::write(staging.join("manifest.json"), b"{}").unwrap();
    s.publish_set(ID, &staging).unwrap();
    assert_eq!(s.set_ids().unwrap(), vec![ID]);
    assert_eq!(read(s, &format!("sets/{ID}/db.sql.zst")), b"dump");
    assert!(s.begin_set(ID).unwrap().is_none(), "taken once published");
}

/// Moving aside never replaces, and says when the key is gone.
pub fn move_aside_never_replaces(s: &dyn Storage) {
    s.put_if_absent("objects/ab/abc", b"bad").unwrap();
    assert!(
        s.move_aside("objects/ab/abc", "objects/.corrupt/abc")
            .unwrap()
    );
    s.put_if_absent("objects/ab/abc", b"bad again").unwrap();
    assert!(
        !s.move_aside("objects/ab/abc", "objects/.corrupt/abc")
            .unwrap()
    );
    let gone = s.move_aside("objects/ab/zzz", "objects/.corrupt/zzz");
    assert!(gone.err().is_some_and(|e| is_not_found(&e)));
}
