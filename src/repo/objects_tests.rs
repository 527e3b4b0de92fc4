//! Unit tests of the object store: naming, replacing, staging, encodings,
//! corrupt objects moved aside.

use super::*;
use crate::repo::digest::sha256_hex;

fn read_all(store: &ObjectStore, sha: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .reader(sha, Encoding::Raw)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn put_names_the_object_by_the_hash_of_its_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let text = "hello attachment\n".repeat(1000).into_bytes();
    let (info, committed) = store.put(&mut &text[..], Encoding::Zst).unwrap();
    assert_eq!(info.sha256, sha256_hex(&text));
    assert_eq!(info.size, text.len() as u64);
    assert!(committed.new);
    assert!(committed.written_bytes < text.len() as u64 / 10);
    let path = store.path(&info.sha256, Encoding::Zst);
    assert!(path.ends_with(format!("{}/{}.zst", &info.sha256[..2], info.sha256)));
    assert_eq!(fs::metadata(&path).unwrap().len(), committed.written_bytes);
    assert_eq!(read_all(&store, &info.sha256), text);
    // Nothing is left under a temporary name.
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
}

#[test]
fn an_object_is_stored_once_and_a_fresh_copy_takes_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let data = b"same content in two files".repeat(10);
    let (first, c1) = store.put(&mut &data[..], Encoding::Raw).unwrap();
    let path = store.path(&first.sha256, Encoding::Raw);
    // A damaged copy (same size, one byte flipped) is replaced by the
    // freshly hashed one: nothing this run read is trusted from disk.
    let mut damaged = fs::read(&path).unwrap();
    damaged[3] ^= 1;
    fs::write(&path, &damaged).unwrap();
    let (_, c2) = store.put(&mut &data[..], Encoding::Raw).unwrap();
    assert_eq!(fs::read(&path).unwrap(), data);
    // Same content in the other encoding is recognised as stored, too.
    let (_, c3) = store.put(&mut &data[..], Encoding::Zst).unwrap();
    assert!(c1.new && !c2.new && !c3.new);
    assert_eq!(c2.written_bytes, 0);
    assert!(!store.path(&first.sha256, Encoding::Zst).exists());
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
}

#[test]
fn stat_check_and_quarantine_tell_a_corrupt_object_and_move_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let text = "a compressible attachment\n".repeat(500).into_bytes();
    let (info, _) = store.put(&mut &text[..], Encoding::Zst).unwrap();
    let sha = &info.sha256;
    assert_eq!(
        store.stat(sha, Encoding::Raw),
        Some((Encoding::Zst, info.stored_bytes))
    );
    assert_eq!(
        store.check(sha, Encoding::Zst).unwrap(),
        Some(text.len() as u64)
    );
    // Same size, one byte flipped: only reading tells.
    let path = store.path(sha, Encoding::Zst);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(store.stat(sha, Encoding::Zst).unwrap().1, info.stored_bytes);
    assert_eq!(store.check(sha, Encoding::Zst).unwrap(), None);
    let moved = store.quarantine(sha, Encoding::Zst).unwrap();
    assert_eq!(
        moved,
        dir.path().join(CORRUPT_DIR).join(format!("{sha}.zst"))
    );
    assert!(store.stat(sha, Encoding::Zst).is_none());
    // Found corrupt again later: a second name, nothing overwritten.
    store.put(&mut &text[..], Encoding::Zst).unwrap();
    fs::write(&path, b"truncated").unwrap();
    assert_eq!(store.check(sha, Encoding::Zst).unwrap(), None);
    let again = store.quarantine(sha, Encoding::Zst).unwrap();
    assert_ne!(again, moved);
    assert!(moved.exists() && again.exists());
}

#[test]
fn a_staged_object_is_invisible_until_committed_and_gone_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let mut packer = Packer::new().unwrap();
    let mut w = store.writer(Encoding::Raw, &mut packer).unwrap();
    w.write_all(b"half an attachment").unwrap();
    let staged = w.finish().unwrap();
    let sha = staged.info.sha256.clone();
    assert!(!store.exists(&sha));
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 1);
    drop(staged);
    assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
    assert!(!store.exists(&sha));

    let mut w = store.writer(Encoding::Raw, &mut packer).unwrap();
    w.write_all(b"half an attachment").unwrap();
    let committed = store.commit(vec![w.finish().unwrap()]).unwrap();
    assert!(committed[0].new);
    assert!(store.exists(&sha));
    store.sync().unwrap();
}

#[test]
fn encoding_follows_the_data() {
    let mut packer = Packer::new().unwrap();
    assert_eq!(
        packer.choose(&b"Subject: hello\r\n".repeat(100)),
        Encoding::Zst
    );
    let mut gz = b"\x1f\x8b\x08\x00".to_vec();
    gz.extend(b"compressible but already gzip".repeat(100));
    assert_eq!(packer.choose(&gz), Encoding::Raw);
    let noise: Vec<u8> = (0..2048u32)
        .flat_map(|i| hex::decode(sha256_hex(&i.to_le_bytes())).unwrap())
        .collect();
    assert_eq!(packer.choose(&noise), Encoding::Raw);
    assert_eq!(packer.choose(b"tiny"), Encoding::Raw);
}

#[test]
fn one_packer_compresses_many_objects_independently() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let mut packer = Packer::new().unwrap();
    let texts = [
        b"first text ".repeat(300),
        b"second, other text ".repeat(200),
    ];
    let mut staged = Vec::new();
    for text in &texts {
        let mut w = store.writer(Encoding::Zst, &mut packer).unwrap();
        w.write_all(text).unwrap();
        staged.push(w.finish().unwrap());
    }
    let infos: Vec<ObjectInfo> = staged.iter().map(|s| s.info.clone()).collect();
    store.commit(staged).unwrap();
    for (info, text) in infos.iter().zip(&texts) {
        assert_eq!(read_all(&store, &info.sha256), *text);
    }
}

#[test]
fn a_missing_object_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(dir.path()).unwrap();
    let sha = sha256_hex(b"x");
    let err = store.reader(&sha, Encoding::Raw).err().unwrap().to_string();
    assert!(err.contains(&sha), "{err}");
}
