//! Deliberate damage to a published set that its checksums cannot catch:
//! a file is rewritten, then the manifest's records of it and the manifest's
//! own checksum are brought in line, as an attacker (or a bug) would.

use std::fs;
use std::path::{Path, PathBuf};

use kcbackup::attachments::IndexEntry;
use kcbackup::repo::ObjectStore;
use kcbackup::repo::digest::{file_digest, sha256_hex};
use kcbackup::repo::manifest::{DumpChunk, Manifest};
use serde_json::Value;

/// Decompresses `path` (zstd), lets `edit` change the bytes, recompresses.
pub fn rewrite_zst(path: &Path, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let plain = zstd::decode_all(&fs::read(path).unwrap()[..]).unwrap();
    let edited = edit(plain);
    fs::write(path, zstd::encode_all(&edited[..], 3).unwrap()).unwrap();
}

/// The entries of a set's attachment index.
pub fn read_index(set_dir: &Path) -> Vec<IndexEntry> {
    let raw =
        zstd::decode_all(&fs::read(set_dir.join("attachments.jsonl.zst")).unwrap()[..]).unwrap();
    String::from_utf8(raw)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rewrites the set's attachment index with `edit` applied to its entries.
pub fn edit_index(set_dir: &Path, edit: impl FnOnce(&mut Vec<IndexEntry>)) {
    let mut entries = read_index(set_dir);
    edit(&mut entries);
    let mut text = String::new();
    for e in &entries {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    rewrite_zst(&set_dir.join("attachments.jsonl.zst"), |_| {
        text.into_bytes()
    });
}

/// Brings the manifest in line with the set's files again: every `files[]`
/// entry gets its file's size and checksum, `edit` may change more, and
/// `manifest.json.sha256` is rewritten. Verification of the set's own
/// files then passes; only deeper checks can notice the damage.
pub fn reseal(set_dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = set_dir.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        let name = f["name"].as_str().unwrap().to_string();
        let (bytes, sha) = file_digest(&set_dir.join(name)).unwrap();
        f["bytes"] = bytes.into();
        f["sha256"] = sha.into();
    }
    edit(&mut m);
    let json = serde_json::to_vec_pretty(&m).unwrap();
    fs::write(&path, &json).unwrap();
    fs::write(
        set_dir.join("manifest.json.sha256"),
        format!("{}  manifest.json\n", sha256_hex(&json)),
    )
    .unwrap();
}

/// The SQL text of a set's dump, read through kcbackup's own dump reader
/// (chunks checked, whole checksum checked).
pub fn read_dump(set_dir: &Path) -> Vec<u8> {
    let manifest = Manifest::load(set_dir).unwrap();
    let store = ObjectStore::open(&set_dir.join("../../objects")).unwrap();
    let mut sql = Vec::new();
    std::io::Read::read_to_end(
        &mut kcbackup::dump::reader::open(set_dir, &manifest, &store).unwrap(),
        &mut sql,
    )
    .unwrap();
    sql
}

/// The chunks of a set's dump in order, from its chunk list (none for a
/// set written before chunking).
pub fn chunks(set_dir: &Path) -> Vec<DumpChunk> {
    let manifest = Manifest::load(set_dir).unwrap();
    kcbackup::repo::chunk_list::read_all(set_dir, &manifest).unwrap()
}

/// Rewrites the set's chunk list with `edit` applied to its chunks and
/// reseals the manifest (`files[]` and the chunk count): only the checks
/// of the list's content can then notice.
pub fn edit_chunk_list(set_dir: &Path, edit: impl FnOnce(&mut Vec<DumpChunk>)) {
    let mut list = chunks(set_dir);
    edit(&mut list);
    let mut text = String::new();
    for c in &list {
        text.push_str(&serde_json::to_string(c).unwrap());
        text.push('\n');
    }
    let path = set_dir.join(kcbackup::repo::contents::CHUNK_LIST_FILE);
    rewrite_zst(&path, |_| text.into_bytes());
    reseal(set_dir, |m| {
        m["database"]["chunk_count"] = list.len().into();
    });
}

/// The object file of a dump chunk.
pub fn chunk_file(set_dir: &Path, sha256: &str) -> PathBuf {
    set_dir
        .join("../../objects")
        .join(&sha256[..2])
        .join(format!("{sha256}.zst"))
}

/// Turns a chunked set into one as the release before chunking wrote it:
/// the dump in the set's own `db.sql.zst`, no chunk list, manifest resealed.
/// Nothing else changes, so the set verifies and restores as before.
pub fn make_legacy(set_dir: &Path) {
    if set_dir.join("db.sql.zst").exists() {
        return;
    }
    let sql = read_dump(set_dir);
    let dump = set_dir.join("db.sql.zst");
    fs::write(&dump, zstd::encode_all(&sql[..], 1).unwrap()).unwrap();
    let (bytes, sha) = file_digest(&dump).unwrap();
    reseal(set_dir, |m| {
        m["files"].as_array_mut().unwrap().push(serde_json::json!({
            "name": "db.sql.zst", "bytes": bytes, "sha256": sha,
        }));
        let db = &mut m["database"];
        db["file"] = "db.sql.zst".into();
        db["stored_bytes"] = bytes.into();
        db["stored_sha256"] = sha.into();
        let db = db.as_object_mut().unwrap();
        db.remove("chunk_list");
        db.remove("chunk_count");
        m["files"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != kcbackup::repo::contents::CHUNK_LIST_FILE);
    });
    // After the reseal, which digests every file still listed.
    let _ = fs::remove_file(set_dir.join(kcbackup::repo::contents::CHUNK_LIST_FILE));
}

/// Rewrites the stored dump with `edit` on its SQL text and reseals the
/// manifest (files[], database bytes and both checksums), so the dump
/// loads and only the restored data can show the damage. The set becomes
/// a single-file (pre-chunking) one: an edited text has other chunks.
pub fn edit_dump(set_dir: &Path, edit: impl FnOnce(String) -> String) {
    make_legacy(set_dir);
    let dump = set_dir.join("db.sql.zst");
    let mut sql = (0u64, String::new());
    rewrite_zst(&dump, |plain| {
        let text = edit(String::from_utf8(plain).unwrap());
        sql = (text.len() as u64, sha256_hex(text.as_bytes()));
        text.into_bytes()
    });
    let (stored_bytes, stored_sha) = file_digest(&dump).unwrap();
    reseal(set_dir, |m| {
        let db = &mut m["database"];
        db["bytes"] = sql.0.into();
        db["sha256"] = sql.1.clone().into();
        db["stored_bytes"] = stored_bytes.into();
        db["stored_sha256"] = stored_sha.into();
    });
}

/// Removes the first row of `table` from the dump's INSERT statements
/// (a whole statement when it holds a single row).
pub fn drop_first_row(sql: String, table: &str) -> String {
    // At a line start: the generator hides look-alikes inside strings.
    let marker = format!("\nINSERT INTO `{table}` VALUES");
    let at = sql.find(&marker).expect("an INSERT for the table") + marker.len();
    let start = at + sql[at..].find('(').expect("a row");
    // Rows are `(...),(...);` with quoted strings that may hold `),(`: walk
    // the quotes to find the end of the first tuple.
    let bytes = sql.as_bytes();
    let (mut i, mut quoted) = (start, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'\'' => quoted = !quoted,
            b')' if !quoted => break,
            _ => {}
        }
        i += 1;
    }
    match bytes[i + 1] {
        // `(row),` : drop the row and its comma.
        b',' => format!("{}{}", &sql[..start], &sql[i + 2..]),
        // The only row: drop the whole statement line.
        _ => {
            let line_start = sql[..start].rfind('\n').map_or(0, |n| n + 1);
            let line_end = sql[i..].find('\n').map_or(sql.len(), |n| i + n + 1);
            format!("{}{}", &sql[..line_start], &sql[line_end..])
        }
    }
}

/// The stored object files of a repository (not temporaries, not those moved aside).
pub fn object_files(repo: &Path) -> Vec<PathBuf> {
    let objects = repo.join("objects");
    crate::common::verify::list_files(&objects)
        .into_iter()
        .filter(|rel| !rel.starts_with(".tmp") && !rel.starts_with(".corrupt"))
        .map(|rel| objects.join(rel))
        .collect()
}

/// The index paths whose data is the object at `object`.
pub fn paths_of_object(set_dir: &Path, object: &Path) -> Vec<String> {
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    let sha = name.trim_end_matches(".zst");
    read_index(set_dir)
        .into_iter()
        .filter(|e| e.sha256.as_deref() == Some(sha))
        .map(|e| e.path)
        .collect()
}

/// [`edit_dump`] that keeps the set chunked: the edited text is cut into
/// fixed `piece`-byte chunks put into the store (so statements straddle
/// chunk edges), with a new chunk list, the manifest resealed.
pub fn edit_dump_chunked(set_dir: &Path, piece: usize, edit: impl FnOnce(String) -> String) {
    let text = edit(String::from_utf8(read_dump(set_dir)).unwrap());
    let store = ObjectStore::open(&set_dir.join("../../objects")).unwrap();
    let mut list = Vec::new();
    let mut offset = 0u64;
    for data in text.as_bytes().chunks(piece) {
        let (info, _) = store
            .put(&mut &data[..], kcbackup::repo::objects::Encoding::Zst)
            .unwrap();
        list.push(DumpChunk {
            sha256: info.sha256,
            offset,
            size: data.len() as u64,
            stored_bytes: info.stored_bytes,
        });
        offset += data.len() as u64;
    }
    edit_chunk_list(set_dir, |chunks| *chunks = list);
    let sha = sha256_hex(text.as_bytes());
    reseal(set_dir, |m| {
        m["database"]["bytes"] = text.len().into();
        m["database"]["sha256"] = sha.into();
    });
}
