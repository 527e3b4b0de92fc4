//! Repository corruption, each fault through the whole chain: verify exits
//! 3 naming the finding, restore and drill refuse the set, the next backup
//! is fine and leaves nothing behind, sets the damage does not touch still
//! verify. (Truncated and overwritten objects, `stored_sha256` and rolling
//! verification are issue 8 items 1 and 4, tested with their fixes.)

mod common;
mod faultkit;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use faultkit::{Fx, Out, V1};
use kcbackup::attachments::index::read_index;
use kcbackup::generator::add_attachments;
use kcbackup::repo::manifest::Manifest;

/// SHA-256 of every object a set's index references.
fn referenced(fx: &Fx, set: &str) -> BTreeSet<String> {
    let dir = fx.set_dir(set);
    let m = Manifest::load(&dir).expect("manifest");
    let mut objects: BTreeSet<String> = read_index(&dir.join(&m.attachments.index_file))
        .expect("index")
        .filter_map(|e| e.expect("index entry").sha256)
        .collect();
    let chunks = kcbackup::repo::chunk_list::read_all(&dir, &m).expect("chunk list");
    objects.extend(chunks.into_iter().map(|c| c.sha256));
    objects
}

/// Object files by the SHA-256 in their name.
fn objects(fx: &Fx) -> BTreeMap<String, PathBuf> {
    let root = fx.repo.join("objects");
    let mut out = BTreeMap::new();
    for d in faultkit::names(&root) {
        if d.starts_with('.') {
            continue;
        }
        for f in faultkit::names(&root.join(&d)) {
            let sha = f.trim_end_matches(".zst").to_string();
            out.insert(sha, root.join(&d).join(f));
        }
    }
    out
}

fn restore(fx: &Fx, set: &str, tag: &str) -> Out {
    let args = fx.restore_args(set, tag);
    fx.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn drill(fx: &Fx, set: &str) -> Out {
    fx.run(&["drill", set, "--json"])
}

/// verify exits 3 with a problem containing `needle`; restore (exit 3)
/// and drill refuse with one message.
fn assert_refused(fx: &Fx, set: &str, needle: &str, what: &str) {
    let v = fx.verify(set);
    assert_eq!(v.code, Some(3), "{what}: verify: {}{}", v.stdout, v.stderr);
    let report = format!("{}{}", v.stdout, v.stderr);
    assert!(
        report.contains(needle),
        "{what}: verify does not name {needle:?}: {report}"
    );
    let r = restore(fx, set, "refused");
    // Damaged set data, as verify and drill say: 3 (not a target problem).
    assert!(
        matches!(r.code, Some(3)),
        "{what}: restore exit {:?}: {}",
        r.code,
        r.stderr
    );
    r.assert_one_message(&format!("{what}: restore"));
    let d = drill(fx, set);
    assert!(
        matches!(d.code, Some(1) | Some(3)),
        "{what}: drill exit {:?}: {}{}",
        d.code,
        d.stdout,
        d.stderr
    );
}

/// The sets that reference none of `damaged` still verify.
fn assert_others_intact(fx: &Fx, sets: &[String], damaged: &BTreeSet<String>, what: &str) {
    let untouched: Vec<String> = sets
        .iter()
        .filter(|s| referenced(fx, s).is_disjoint(damaged))
        .cloned()
        .collect();
    fx.assert_verifies(&untouched, what);
}

/// A fixture with two sets, the second adding objects of its own.
fn two_sets() -> (Fx, String, String) {
    let mut fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    add_attachments(common::server(), &mut fx.store, 20, 77).unwrap();
    let second = fx.backup_ok();
    (fx, first, second)
}

/// An object only `set` references.
fn own_object(fx: &Fx, set: &str, others: &[&str]) -> (String, PathBuf) {
    let mut mine = referenced(fx, set);
    for o in others {
        for sha in referenced(fx, o) {
            mine.remove(&sha);
        }
    }
    // An attachment's: a dump chunk of its own may hold what no later dump
    // has (the trailer's time), so no backup could write it again.
    let dir = fx.set_dir(set);
    let m = Manifest::load(&dir).expect("manifest");
    let chunks = kcbackup::repo::chunk_list::read_all(&dir, &m).expect("chunk list");
    mine.retain(|sha| !chunks.iter().any(|c| &c.sha256 == sha));
    let sha = mine.into_iter().next().expect("an object of its own");
    let path = objects(fx)[&sha].clone();
    (sha, path)
}

#[test]
fn a_deleted_object_is_named_refused_and_recreated_by_the_next_backup() {
    let (fx, first, second) = two_sets();
    let (sha, path) = own_object(&fx, &second, &[&first]);
    fs::remove_file(&path).unwrap();
    assert_refused(&fx, &second, &sha[..16], "object deleted");
    fx.assert_verifies(std::slice::from_ref(&first), "object deleted");
    fx.assert_recovers(std::slice::from_ref(&first), "object deleted");
    assert!(path.exists(), "the next backup wrote the object again");
    fx.assert_verifies(&[first, second], "object re-created");
}

#[test]
fn an_object_swapped_with_another_of_the_same_size_is_named_and_refused() {
    let (fx, first, second) = two_sets();
    let (a, b) = same_size_pair(&fx, &second).expect("two objects of one size");
    let (pa, pb) = (objects(&fx)[&a].clone(), objects(&fx)[&b].clone());
    let (da, db) = (fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
    fs::write(&pa, &db).unwrap();
    fs::write(&pb, &da).unwrap();
    assert_refused(&fx, &second, &a[..16], "objects swapped");
    let damaged: BTreeSet<String> = [a, b].into();
    assert_others_intact(&fx, &[first], &damaged, "objects swapped");
}

/// Two objects of one stored size and encoding, at least one referenced by `set`.
fn same_size_pair(fx: &Fx, set: &str) -> Option<(String, String)> {
    let refs = referenced(fx, set);
    let mut by_size: BTreeMap<(u64, bool), Vec<String>> = BTreeMap::new();
    for (sha, path) in objects(fx) {
        let len = fs::metadata(&path).unwrap().len();
        let zst = path.extension().is_some_and(|x| x == "zst");
        by_size.entry((len, zst)).or_default().push(sha);
    }
    by_size
        .into_values()
        .filter(|v| v.len() >= 2)
        .find_map(|v| {
            let a = v.iter().find(|s| refs.contains(*s))?.clone();
            let b = v.iter().find(|s| **s != a)?.clone();
            Some((a, b))
        })
}

/// The next backup after a swap: the two objects it would reuse hold each
/// other's bytes, sizes unchanged, so only a re-read can tell. With
/// `[verify] rolling_days = 1` every reused object is re-read by that
/// backup: both are moved aside, written again from the live store, and
/// the new set is intact (README: what "complete" promises).
#[test]
fn after_a_swap_the_next_backup_publishes_nothing_corrupt() {
    let (fx, first, second) = two_sets();
    let (a, b) = same_size_pair(&fx, &second).expect("two objects of one size");
    let (pa, pb) = (objects(&fx)[&a].clone(), objects(&fx)[&b].clone());
    let (da, db) = (fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
    fs::write(&pa, &db).unwrap();
    fs::write(&pb, &da).unwrap();
    let rolling = fx.config_with("rolling", &fx.repo, "\n[verify]\nrolling_days = 1\n");
    let out = fx.run_with(&rolling, &["backup", "--json"]);
    assert_eq!(out.code, Some(0), "backup after the swap: {}", out.stderr);
    let set = out.set().unwrap();
    assert_eq!(fx.verify(&set).code, Some(0), "the new set is intact");
    assert_eq!(fs::read(&pa).unwrap(), da, "object {a} written again");
    assert_eq!(fs::read(&pb).unwrap(), db, "object {b} written again");
    let _ = first;
}

#[test]
fn a_flipped_dump_byte_is_named_and_refused_and_other_sets_untouched() {
    let (fx, first, second) = two_sets();
    // A chunk of the second set's dump that the first set does not share.
    let theirs = referenced(&fx, &first);
    let dir = fx.set_dir(&second);
    let m = Manifest::load(&dir).expect("manifest");
    let chunks = kcbackup::repo::chunk_list::read_all(&dir, &m).expect("chunk list");
    let chunk = chunks
        .iter()
        .find(|c| !theirs.contains(&c.sha256))
        .expect("a chunk only the second set's dump has");
    flip(&objects(&fx)[&chunk.sha256], 200);
    let needle = format!("chunk {}", chunk.sha256);
    assert_refused(&fx, &second, &needle, "dump byte flipped");
    fx.assert_recovers(std::slice::from_ref(&first), "dump byte flipped");
}

#[test]
fn an_edited_manifest_is_named_and_refused() {
    let (fx, first, second) = two_sets();
    let path = fx.set_dir(&second).join("manifest.json");
    let text = fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"complete\"", "\"complete\" ", 1);
    let edited = if edited == text {
        text.replacen('{', "{ ", 1)
    } else {
        edited
    };
    fs::write(&path, edited).unwrap();
    assert_refused(&fx, &second, "manifest", "manifest edited");
    fx.assert_recovers(std::slice::from_ref(&first), "manifest edited");
}

#[test]
fn a_deleted_manifest_checksum_is_named_and_refused() {
    let (fx, first, second) = two_sets();
    fs::remove_file(fx.set_dir(&second).join("manifest.json.sha256")).unwrap();
    assert_refused(&fx, &second, "manifest.json.sha256", "checksum deleted");
    fx.assert_recovers(std::slice::from_ref(&first), "checksum deleted");
}

#[test]
fn a_garbage_lock_file_stops_nothing() {
    let (fx, first, second) = two_sets();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(fx.repo.join("lock"), &garbage).unwrap();
    fx.assert_verifies(&[first.clone(), second.clone()], "garbage lock");
    let r = restore(&fx, &second, "garbagelock");
    assert_eq!(r.code, Some(0), "restore with a garbage lock: {}", r.stderr);
    let l = fx.run(&["list", "--json"]);
    assert_eq!(l.code, Some(0), "{}", l.stderr);
    fx.assert_recovers(&[first, second], "garbage lock");
}

#[test]
fn a_fake_work_directory_is_ignored_by_readers_and_removed_by_the_next_backup() {
    let (fx, first, second) = two_sets();
    let fake = fx.repo.join("sets/.work-x");
    fs::create_dir_all(fake.join("deep/er")).unwrap();
    fs::write(fake.join("manifest.json"), "{ not json").unwrap();
    fs::write(fake.join("deep/er/junk"), vec![0u8; 10_000]).unwrap();
    let l = fx.run(&["list", "--json"]);
    assert_eq!(l.code, Some(0), "{}", l.stderr);
    assert!(!l.stdout.contains(".work-x"), "list shows the work dir");
    let v = fx.run(&["verify", "latest", "--json"]);
    assert_eq!(v.code, Some(0), "{}", v.stderr);
    assert_eq!(v.json()["set"], second.as_str());
    fx.assert_recovers(&[first, second], "fake work dir");
    assert!(!fake.exists());
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    let i = offset.min(bytes.len() - 1);
    bytes[i] ^= 0x10;
    fs::write(path, bytes).unwrap();
}
