//! Hostile attachment trees (symlinks aside: issue 8 item 2): a FIFO and a
//! socket beside the data and in place of a referenced file, a file with a
//! non-UTF-8 name, empty files, a directory in place of a referenced file.
//! The backup must end (no hang on a FIFO), with 0 when every referenced
//! instance has its data and 3 naming the instance otherwise; verify agrees;
//! a complete set restores; nothing is left behind.

mod common;
mod faultkit;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use faultkit::{Fx, V1};

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A referenced data file (not `.gz`) of the store and its instance id.
fn referenced_file(fx: &Fx, nth: usize) -> (u32, PathBuf) {
    let (id, rel) = fx
        .store
        .expected
        .instances
        .iter()
        .filter_map(|(id, i)| i.path.clone().map(|p| (*id, p)))
        .filter(|(_, p)| p.extension().is_none())
        .nth(nth)
        .expect("a plain referenced file");
    (id, fx.store.attachment_path.join(rel))
}

fn restore_tree(fx: &Fx, set: &str, to: &Path) -> faultkit::Out {
    fx.run(&[
        "restore",
        set,
        "--json",
        "--to-attachments",
        to.to_str().unwrap(),
    ])
}

#[test]
fn fifos_sockets_odd_names_and_empty_files_beside_the_data_are_harmless() {
    let fx = Fx::new(V1, |_| {});
    let att = fx.store.attachment_path.clone();
    mkfifo(&att.join("3/4/a-fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(att.join("5/6/a-socket")).unwrap();
    let odd = att.join(OsStr::from_bytes(b"7/8/\xff\xfe-not-utf8"));
    fs::write(&odd, b"odd name").unwrap();
    fs::write(att.join("1/2/empty"), b"").unwrap();
    let out = fx.run(&["backup", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let set = out.set().unwrap();
    assert_eq!(fx.verify(&set).code, Some(0));
    let to = fx.dir.path().join("restored");
    let r = restore_tree(&fx, &set, &to);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Every referenced instance came back with its bytes.
    for info in fx.store.expected.instances.values() {
        let rel = info.path.as_ref().unwrap();
        assert_eq!(
            fs::read(to.join(rel)).unwrap(),
            fs::read(att.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    fx.assert_recovers(&[set], "odd entries beside the data");
}

#[test]
fn a_fifo_or_a_directory_in_place_of_a_referenced_file_makes_the_set_incomplete() {
    let fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let (fifo_id, fifo_at) = referenced_file(&fx, 3);
    let (dir_id, dir_at) = referenced_file(&fx, 7);
    let (empty_id, empty_at) = referenced_file(&fx, 11);
    fs::remove_file(&fifo_at).unwrap();
    mkfifo(&fifo_at);
    fs::remove_file(&dir_at).unwrap();
    fs::create_dir(&dir_at).unwrap();
    fs::write(dir_at.join("inside"), b"x").unwrap();
    // An empty file is data as far as files_v1 can tell: present.
    fs::write(&empty_at, b"").unwrap();

    let out = fx.run(&["backup", "--json"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let set = out.set().unwrap();
    let missing: Vec<u64> = out.json()["attachments"]["missing_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    let mut want = vec![fifo_id as u64, dir_id as u64];
    want.sort();
    assert_eq!(missing, want, "{}", out.stderr);
    assert!(out.stderr.contains(&fifo_id.to_string()), "{}", out.stderr);
    assert!(!missing.contains(&(empty_id as u64)));
    let v = fx.verify(&set);
    assert_eq!(v.code, Some(3), "verify agrees: {}", v.stdout);
    fx.assert_verifies(std::slice::from_ref(&first), "hostile tree");
    // The next backup of the same tree: the same finding, nothing left.
    let again = fx.run(&["backup", "--json"]);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
}
