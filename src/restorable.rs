//! The one definition of "restorable": the checks restore itself applies to
//! a set, run without reading any data. Backup runs them before it marks a
//! set `complete`; verify, restore and drill run them first, so all four
//! agree on what a set that cannot be restored is, and say it the same way.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::attachments::{EntryKind, IndexEntry, read_index};
use crate::layout::Layout;
use crate::repo::chunk_list;
use crate::repo::manifest::{FORMAT, Manifest};
use crate::repo::objects::{Encoding, ObjectStore};
use crate::restore::files::check_index;

/// How many findings a check keeps (the count is exact).
pub const MAX_FINDINGS: usize = 1000;

/// One reason a set cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// `manifest`, `set-file`, `index`, `object`.
    pub kind: &'static str,
    /// The manifest field, file, index path or object concerned.
    pub path: String,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

/// Everything found, capped at [`MAX_FINDINGS`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    pub total: u64,
    pub list: Vec<Finding>,
    /// Objects the set's index names that are missing or not of their
    /// recorded stored size (also counted in `total`).
    pub objects_missing: u64,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn add(&mut self, kind: &'static str, path: impl Into<String>, detail: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_FINDINGS {
            self.list.push(Finding {
                kind,
                path: path.into(),
                detail: detail.into(),
            });
        }
    }

    /// One line for a refusal: the first finding and how many more.
    pub fn summary(&self) -> String {
        let first = self.list.first().map(|f| f.to_string()).unwrap_or_default();
        match self.total {
            0 => String::new(),
            1 => first,
            n => format!("{first} (and {} more; `kcbackup verify` lists them)", n - 1),
        }
    }
}

/// The set in `dir` as restore would take it: its manifest's fields, its
/// files by `stat`, every chunk of its dump and every path and link of its
/// index, and every object they name present at its recorded stored size.
/// `dir` is the set's local directory (`SetInfo::local_dir`, or a set being
/// written).
pub fn check(dir: &Path, manifest: &Manifest, store: &ObjectStore) -> Findings {
    check_parts(dir, manifest, store, true)
}

/// [`check`], with the attachment tree (index and objects) only when
/// `tree`: a restore of the database or the config alone needs no object.
pub fn check_parts(dir: &Path, manifest: &Manifest, store: &ObjectStore, tree: bool) -> Findings {
    let mut found = Findings::default();
    check_manifest(dir, manifest, &mut found);
    check_chunks(dir, store, manifest, &mut found);
    let name = &manifest.attachments.index_file;
    if tree && !name.is_empty() && manifest.files.iter().any(|f| &f.name == name) {
        let s3 = is_s3(manifest);
        let mut previous: Option<String> = None;
        match read_index(&dir.join(name)) {
            Ok(index) => {
                for entry in index {
                    match entry {
                        Ok(entry) if s3 => {
                            check_key(store, previous.as_deref(), &entry, &mut found);
                            previous = Some(entry.path);
                        }
                        Ok(entry) => check_entry(store, &entry, &mut found),
                        Err(e) => {
                            found.add("index", name, format!("{e:#}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => found.add("index", name, format!("{e:#}")),
        }
    }
    found
}

/// Only the objects, for `list`: how many the set needs (dump chunks and
/// attachment objects) that a `stat` finds missing or of another size than
/// recorded, and the first of them.
pub fn missing_objects(dir: &Path, manifest: &Manifest, store: &ObjectStore) -> Findings {
    let mut found = Findings::default();
    check_chunks(dir, store, manifest, &mut found);
    let name = &manifest.attachments.index_file;
    if name.is_empty() {
        return found;
    }
    match read_index(&dir.join(name)) {
        Ok(index) => {
            for entry in index.flatten() {
                check_object(store, &entry, &mut found);
            }
        }
        Err(e) => found.add("index", name, format!("{e:#}")),
    }
    found
}

/// Reads every chunk of the set's dump and moves those whose content no
/// longer hashes to their name into `objects/.corrupt/`, as
/// [`move_aside_corrupt`] does for attachments: for drill, after a load
/// failed on bad data, so the next backup writes them again. Returns what
/// was moved. (A chunk repeated in the list is read again: once moved, it
/// is missing, not corrupt, so it is moved once.)
pub fn move_aside_corrupt_chunks(
    dir: &Path,
    manifest: &Manifest,
    store: &ObjectStore,
) -> Vec<String> {
    let mut moved = Vec::new();
    let mut buf = Vec::new();
    let Ok(chunks) = chunk_list::open(dir, manifest) else {
        return moved;
    };
    for chunk in chunks.map_while(Result::ok) {
        let Err(problem) = crate::dump::reader::read_chunk(store, &chunk, &mut buf) else {
            continue;
        };
        if !problem.object_corrupt() {
            continue;
        }
        match store.quarantine(&chunk.sha256, Encoding::Zst) {
            Ok(to) => moved.push(format!("{} to {}", problem.subject(), to.display())),
            Err(e) => moved.push(format!("{} (not moved: {e:#})", problem.subject())),
        }
    }
    moved
}

/// Hashes every object the set's index names and moves those whose content
/// no longer hashes to their name into `objects/.corrupt/` (one rename each:
/// safe beside other readers, whose open files keep the old data). For
/// drill, after a restore failed on bad data. Returns what was moved.
pub fn move_aside_corrupt(dir: &Path, manifest: &Manifest, store: &ObjectStore) -> Vec<String> {
    let mut moved = Vec::new();
    let name = &manifest.attachments.index_file;
    let Ok(index) = read_index(&dir.join(name)) else {
        return moved;
    };
    for entry in index.flatten() {
        let Some(sha) = entry.sha256.as_deref() else {
            continue;
        };
        let Some((encoding, _)) = store.stat(sha, entry.stored.unwrap_or(Encoding::Raw)) else {
            continue;
        };
        if let Ok(None) = store.check(sha, encoding) {
            match store.quarantine(sha, encoding) {
                Ok(to) => moved.push(format!(
                    "object {sha} of {} to {}",
                    entry.path,
                    to.display()
                )),
                Err(e) => moved.push(format!("object {sha} of {} (not moved: {e:#})", entry.path)),
            }
        }
    }
    moved
}

/// The manifest's own fields: a format this program reads, the layout,
/// and each file it names listed, present and of its listed size, with
/// the dump's recorded size and checksum the ones its file list records.
fn check_manifest(dir: &Path, m: &Manifest, found: &mut Findings) {
    if m.format > FORMAT {
        found.add(
            "manifest",
            "format",
            format!(
                "format {} is newer than this kcbackup reads ({FORMAT})",
                m.format
            ),
        );
    }
    match m.kopano.layout {
        None => found.add(
            "manifest",
            "kopano.layout",
            format!(
                "the manifest names no attachment layout (storage backend {:?}, configured {:?})",
                m.kopano.storage_backend, m.kopano.configured_storage
            ),
        ),
        Some(Layout::S3) if m.attachments.s3.is_some() => {}
        Some(Layout::S3) => found.add(
            "manifest",
            "attachments.s3",
            "an s3 set must name the bucket its objects came from",
        ),
        Some(_) => {}
    }
    for f in &m.files {
        if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
            found.add(
                "manifest",
                "files",
                format!("{:?} is not a set file name", f.name),
            );
            continue;
        }
        match fs::metadata(dir.join(&f.name)) {
            Ok(meta) if meta.is_file() && meta.len() == f.bytes => {}
            Ok(meta) => found.add(
                "set-file",
                &f.name,
                format!("{} bytes; the manifest says {}", meta.len(), f.bytes),
            ),
            Err(e) => found.add("set-file", &f.name, format!("cannot be read: {e}")),
        }
    }
    let db = &m.database;
    let named = [
        // A chunked dump has no file of its own, but a chunk list.
        ("database.file", &db.file, db.chunk_list.is_empty()),
        ("database.chunk_list", &db.chunk_list, false),
        ("attachments.index_file", &m.attachments.index_file, false),
        ("config.file", &m.config.file, false),
    ];
    for (field, name, required) in named {
        if name.is_empty() {
            if required {
                found.add("manifest", field, "names no file");
            }
            continue;
        }
        if !m.files.iter().any(|f| &f.name == name) {
            found.add(
                "manifest",
                field,
                format!("names {name}, which the manifest's file list does not hold"),
            );
        }
    }
    if let Some(listed) = m.files.iter().find(|f| f.name == db.file) {
        if db.stored_sha256 != listed.sha256 {
            found.add(
                "manifest",
                "database.stored_sha256",
                format!(
                    "{:?} is not the checksum the manifest's file list records for {} ({})",
                    db.stored_sha256, db.file, listed.sha256
                ),
            );
        }
        if db.stored_bytes != listed.bytes {
            found.add(
                "manifest",
                "database.stored_bytes",
                format!(
                    "{} is not the size the manifest's file list records for {} ({})",
                    db.stored_bytes, db.file, listed.bytes
                ),
            );
        }
    }
}

/// The dump's chunks, streamed from the set's chunk list: one after the
/// other from byte 0 to the dump's size (restore would otherwise load
/// another text than the one recorded), and each in the store, by `stat`,
/// at the stored size the set records (each bad chunk named once).
fn check_chunks(dir: &Path, store: &ObjectStore, m: &Manifest, found: &mut Findings) {
    let db = &m.database;
    if db.chunk_list.is_empty() {
        return;
    }
    let list = &db.chunk_list;
    let chunks = match chunk_list::open(dir, m) {
        Ok(chunks) => chunks,
        Err(e) => return found.add("set-file", list, format!("{e:#}")),
    };
    let mut bad = HashSet::new();
    let (mut at, mut count) = (0, 0u64);
    for c in chunks {
        let c = match c {
            Ok(c) => c,
            Err(e) => return found.add("set-file", list, format!("{e:#}")),
        };
        count += 1;
        if c.offset != at || c.size == 0 {
            return found.add(
                "set-file",
                list,
                format!(
                    "chunk {} covers bytes {}..{}; the chunk before it ends at {at}",
                    c.sha256,
                    c.offset,
                    c.offset + c.size
                ),
            );
        }
        at += c.size;
        let problem = match store.stat(&c.sha256, Encoding::Zst) {
            None => Some("is not in the repository".to_string()),
            Some((_, bytes)) if c.stored_bytes != 0 && bytes != c.stored_bytes => Some(format!(
                "is {bytes} bytes as stored; the set records {}",
                c.stored_bytes
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem
            && bad.insert(c.sha256.clone())
        {
            found.objects_missing += 1;
            found.add(
                "object",
                format!(
                    "chunk {} (bytes {}..{} of the dump)",
                    c.sha256,
                    c.offset,
                    c.offset + c.size
                ),
                problem,
            );
        }
    }
    if at != db.bytes {
        found.add(
            "set-file",
            list,
            format!("the chunks cover {at} bytes; the dump has {}", db.bytes),
        );
    }
    if count != db.chunk_count {
        found.add(
            "set-file",
            list,
            format!("{count} chunks; the manifest says {}", db.chunk_count),
        );
    }
}

/// One index entry: restore's own path and link checks, then its object.
fn check_entry(store: &ObjectStore, entry: &IndexEntry, found: &mut Findings) {
    if let Err(e) = check_index(std::iter::once(Ok(entry.clone()))) {
        found.add("index", &entry.path, format!("{e:#}"));
        return;
    }
    check_object(store, entry, found);
}

/// True for a set of an s3 attachment store: its index holds one object
/// per key, checked by the key rules, not the tree's path rules.
pub fn is_s3(m: &Manifest) -> bool {
    m.kopano.layout == Some(Layout::S3) && m.attachments.s3.is_some()
}

/// The key prefix of an s3 set's objects: kopano-server's key for instance
/// `id` is this followed by `id` (kopano-facts.md, section 3).
pub fn s3_prefix(m: &Manifest) -> String {
    m.attachments
        .s3
        .as_ref()
        .map(|s| s.prefix.clone())
        .unwrap_or_default()
}

/// One entry of an s3 set's index: restore's own key checks (in listing
/// order after `previous`), then its object.
fn check_key(
    store: &ObjectStore,
    previous: Option<&str>,
    entry: &IndexEntry,
    found: &mut Findings,
) {
    if let Err(e) = crate::restore::s3::check_entry(previous, entry) {
        found.add("index", &entry.path, format!("{e:#}"));
        return;
    }
    check_object(store, entry, found);
}

/// A file's object exists, by `stat`, at the stored size the set records.
fn check_object(store: &ObjectStore, entry: &IndexEntry, found: &mut Findings) {
    if entry.kind != EntryKind::File {
        return;
    }
    let Some(sha) = entry.sha256.as_deref() else {
        return;
    };
    let recorded = entry.stored.unwrap_or(Encoding::Raw);
    let problem = match (store.stat(sha, recorded), entry.expected_stored_bytes()) {
        (None, _) => Some("is not in the repository".to_string()),
        (Some((encoding, bytes)), Some(want)) if encoding == recorded && bytes != want => Some(
            format!("is {bytes} bytes as stored; the set records {want}"),
        ),
        _ => None,
    };
    if let Some(problem) = problem {
        found.objects_missing += 1;
        found.add("object", &entry.path, format!("object {sha} {problem}"));
    }
}
