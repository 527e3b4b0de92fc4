//! Unit tests of the capture pipeline on real temporary trees.

use std::fs;

use super::*;
use crate::progress::Hidden;
use crate::repo::digest::sha256_hex;

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    store: ObjectStore,
    objects: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("attachments");
    for (path, body) in [
        ("0/0/10", b"plain text attachment\n".repeat(200)),
        ("0/0/20.gz", b"\x1f\x8b\x08\x00 pretend gzip".to_vec()),
        ("1/0/1", b"one".to_vec()),
        ("1/0/1.deleted", b"gone".to_vec()),
    ] {
        let path = src.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    fs::create_dir_all(src.join("9/19")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
    let objects = dir.path().join("objects");
    let out = dir.path().join("sets");
    fs::create_dir_all(&out).unwrap();
    Fixture {
        store: ObjectStore::open(&objects).unwrap(),
        _dir: dir,
        src,
        objects,
        out,
    }
}

fn run(f: &Fixture, name: &str, previous: Option<&str>) -> (CaptureStats, Vec<IndexEntry>) {
    let opts = CaptureOptions {
        workers: 2,
        previous_index: previous.map(|p| f.out.join(p)),
        follow_dirs: true,
        ..CaptureOptions::default()
    };
    let index = f.out.join(name);
    let stats = capture(&f.src, &f.store, &index, &opts, &Hidden).unwrap();
    let entries = read_index(&index).unwrap().map(Result::unwrap).collect();
    (stats, entries)
}

/// Bytes under `objects/` (what the repository grew by).
fn stored_bytes(dir: &Path) -> u64 {
    crate::walk::Walker::new(dir)
        .unwrap()
        .map(|w| match w.unwrap() {
            Walked::Entry { meta, .. } if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn every_entry_is_indexed_in_walk_order_with_its_object_stored() {
    let f = fixture();
    let (stats, entries) = run(&f, "a.jsonl.zst", None);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "0",
            "0/0",
            "0/0/10",
            "0/0/20.gz",
            "1",
            "1/0",
            "1/0/1",
            "1/0/1.deleted",
            "9",
            "9/19",
            "link"
        ]
    );
    let ten = &entries[2];
    assert_eq!(
        ten.sha256.as_deref(),
        Some(sha256_hex(&b"plain text attachment\n".repeat(200)).as_str())
    );
    assert_eq!(ten.stored, Some(Encoding::Zst));
    assert_eq!(ten.size, 22 * 200);
    // Kopano's own .gz data is stored as it is.
    assert_eq!(entries[3].stored, Some(Encoding::Raw));
    assert_eq!(entries[10].target.as_deref(), Some("/etc/hostname"));
    for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
        let mut back = Vec::new();
        let sha = e.sha256.as_deref().unwrap();
        f.store
            .reader(sha, Encoding::Raw)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(sha256_hex(&back), sha);
    }
    assert_eq!((stats.files, stats.dirs, stats.symlinks), (4, 6, 1));
    assert_eq!(
        (stats.read_files, stats.reused, stats.new_objects),
        (4, 0, 4)
    );
    assert_eq!(stats.written_bytes, stored_bytes(&f.objects));
}

#[test]
fn a_second_capture_reads_only_what_is_new_or_changed() {
    let f = fixture();
    run(&f, "a.jsonl.zst", None);
    let before = stored_bytes(&f.objects);
    fs::write(f.src.join("1/0/11"), b"a new attachment".repeat(50)).unwrap();
    // Same size, new content and mtime: must be read again.
    fs::write(f.src.join("1/0/1"), b"uno").unwrap();
    let (stats, entries) = run(&f, "b.jsonl.zst", Some("a.jsonl.zst"));
    assert_eq!((stats.read_files, stats.reused), (2, 3));
    assert_eq!(stats.new_objects, 2);
    assert_eq!(stored_bytes(&f.objects) - before, stats.written_bytes);
    let one = entries.iter().find(|e| e.path == "1/0/1").unwrap();
    assert_eq!(one.sha256.as_deref(), Some(sha256_hex(b"uno").as_str()));

    // Reused checksums need the object: a deleted object means reading again.
    let ten = entries.iter().find(|e| e.path == "0/0/10").unwrap();
    fs::remove_file(f.store.path(ten.sha256.as_deref().unwrap(), Encoding::Zst)).unwrap();
    let (stats, _) = run(&f, "c.jsonl.zst", Some("b.jsonl.zst"));
    assert_eq!(
        (stats.read_files, stats.reused, stats.new_objects),
        (1, 4, 1)
    );
}

#[test]
fn without_a_previous_index_everything_is_read_but_nothing_rewritten() {
    let f = fixture();
    run(&f, "a.jsonl.zst", None);
    let (stats, _) = run(&f, "b.jsonl.zst", None);
    assert_eq!((stats.read_files, stats.reused), (4, 0));
    assert_eq!((stats.new_objects, stats.written_bytes), (0, 0));
    assert_eq!(fs::read_dir(f.objects.join(".tmp")).unwrap().count(), 0);
}

#[test]
fn a_missing_source_gives_an_empty_index() {
    let f = fixture();
    fs::remove_dir_all(&f.src).unwrap();
    let (stats, entries) = run(&f, "a.jsonl.zst", None);
    assert!(stats.source_missing);
    assert!(entries.is_empty());
}

#[test]
fn a_vanished_file_is_an_outcome_not_an_error() {
    let f = fixture();
    let mut buf = vec![0; 1024];
    let gone = read_file(
        &f.store,
        &f.src.join("nope"),
        "nope",
        &mut buf,
        &mut Packer::new().unwrap(),
    )
    .unwrap();
    assert!(matches!(gone, Outcome::Vanished));
}

#[test]
fn a_file_whose_size_disagrees_with_what_was_read_is_never_stored() {
    // /proc files say size 0 and yield bytes: like a file growing under the reader.
    let f = fixture();
    let mut buf = vec![0; 1024];
    let path = Path::new("/proc/self/status");
    let outcome = read_file(
        &f.store,
        path,
        "status",
        &mut buf,
        &mut Packer::new().unwrap(),
    )
    .unwrap();
    assert!(matches!(outcome, Outcome::Unstable));
    assert_eq!(fs::read_dir(f.objects.join(".tmp")).unwrap().count(), 0);
    assert_eq!(stored_bytes(&f.objects), 0);
}

#[test]
fn an_unreadable_previous_index_means_reading_everything_not_failing() {
    let f = fixture();
    let (stats, entries) = run(&f, "a.jsonl.zst", Some("missing.jsonl.zst"));
    assert_eq!((stats.read_files, stats.reused), (4, 0));
    assert_eq!(entries.len(), 11);
}
