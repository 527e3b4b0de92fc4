//! The attachment index of a set (`attachments.jsonl.zst`): one JSON line per
//! entry of the tree, in walk order, streamed to disk. The previous set's
//! index is read alongside the next walk to reuse checksums of unchanged files.

use std::fs::{File, Metadata};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::dump::refs::{encoder, read_rows};
use crate::repo::objects::Encoding;
use crate::walk::cmp_paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Sockets, fifos, devices: recorded, never read.
    Other,
}

/// One entry of the attachment tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Relative to the attachment root, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: i64,
    #[serde(default)]
    pub mtime_nsec: u32,
    /// Files: SHA-256 of the content, which names the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Files: how the object is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Encoding>,
    /// Files: the size of the object's file as stored, which `list`,
    /// backup and restore check by `stat` (absent in older sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Symlinks: where they point (not followed). Directories: the target
    /// of the symlink that was followed to reach them, captured as if in
    /// place (README: "Symlinks in the attachment store").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// S3 objects: the ETag as listed (quotes included), which with key and
    /// size decides whether the next backup downloads the object again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// S3 objects read from a versioned view: the version captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl IndexEntry {
    /// An entry from `lstat` data, without content facts.
    pub fn from_meta(path: String, meta: &Metadata) -> IndexEntry {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        IndexEntry {
            path,
            kind,
            size: if kind == EntryKind::File {
                meta.size()
            } else {
                0
            },
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
            sha256: None,
            stored: None,
            stored_bytes: None,
            target: None,
            etag: None,
            version_id: None,
        }
    }

    /// The stored size of this file's object as the set records it: the
    /// recorded one, else (older sets) the original size for a raw object.
    pub fn expected_stored_bytes(&self) -> Option<u64> {
        match (self.stored_bytes, self.stored.unwrap_or(Encoding::Raw)) {
            (Some(bytes), _) => Some(bytes),
            (None, Encoding::Raw) => Some(self.size),
            (None, Encoding::Zst) => None,
        }
    }

    /// Same path, size and mtime as a file already captured: its content is
    /// taken to be unchanged (Kopano never rewrites an attachment in place).
    pub fn unchanged_since(&self, before: &IndexEntry) -> bool {
        self.kind == EntryKind::File
            && before.kind == EntryKind::File
            && self.path == before.path
            && self.size == before.size
            && self.mtime == before.mtime
            && self.mtime_nsec == before.mtime_nsec
            && before.sha256.is_some()
    }
}

/// Streams entries to a zstd JSON-lines file.
pub struct IndexWriter {
    out: zstd::Encoder<'static, BufWriter<File>>,
    shown: String,
}

impl IndexWriter {
    pub fn create(path: &Path) -> Result<IndexWriter> {
        Ok(IndexWriter {
            out: encoder(path)?,
            shown: path.display().to_string(),
        })
    }

    pub fn write(&mut self, entry: &IndexEntry) -> Result<()> {
        serde_json::to_writer(&mut self.out, entry)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("while writing {}", self.shown))
    }

    /// Completes the stream; the set's publish step syncs the file.
    pub fn finish(self) -> Result<()> {
        self.out
            .finish()
            .and_then(|mut w| w.flush())
            .with_context(|| format!("while finishing {}", self.shown))
    }
}

/// Reads an index back, entry by entry.
pub fn read_index(path: &Path) -> Result<impl Iterator<Item = Result<IndexEntry>> + use<>> {
    read_rows::<IndexEntry>(path)
}

/// The previous set's index as a cursor that only moves forward: asked for
/// paths in walk order, it answers in one pass with one entry in memory.
pub struct PrevIndex<I> {
    rows: Option<I>,
    next: Option<IndexEntry>,
    /// Why the previous index stopped being used part-way, if it did.
    pub problem: Option<String>,
}

impl<I: Iterator<Item = Result<IndexEntry>>> PrevIndex<I> {
    pub fn new(rows: I) -> PrevIndex<I> {
        let mut prev = PrevIndex {
            rows: Some(rows),
            next: None,
            problem: None,
        };
        prev.advance();
        prev
    }

    /// No previous index: every lookup misses.
    pub fn none() -> PrevIndex<I> {
        PrevIndex {
            rows: None,
            next: None,
            problem: None,
        }
    }

    fn advance(&mut self) {
        self.next = match self.rows.as_mut().and_then(Iterator::next) {
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                // A damaged previous index only costs re-reading; never fatal.
                self.problem = Some(format!("{e:#}"));
                self.rows = None;
                None
            }
            None => None,
        };
    }

    /// The previous entry for `path`, if there is one. Paths must be asked
    /// in walk order; entries passed over are dropped.
    pub fn find(&mut self, path: &str) -> Option<IndexEntry> {
        self.find_by(path, cmp_paths)
    }

    /// [`PrevIndex::find`] for an index in the order of `cmp` (an s3
    /// store's index is in byte order of key).
    pub fn find_by(
        &mut self,
        path: &str,
        cmp: impl Fn(&str, &str) -> std::cmp::Ordering,
    ) -> Option<IndexEntry> {
        while let Some(next) = &self.next {
            match cmp(&next.path, path) {
                std::cmp::Ordering::Less => self.advance(),
                std::cmp::Ordering::Equal => {
                    let found = self.next.take();
                    self.advance();
                    return found;
                }
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, sha: &str) -> IndexEntry {
        IndexEntry {
            path: path.into(),
            kind: EntryKind::File,
            size,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            sha256: Some(sha.into()),
            stored: Some(Encoding::Raw),
            stored_bytes: Some(3),
            target: None,
            etag: None,
            version_id: None,
        }
    }

    #[test]
    fn an_index_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attachments.jsonl.zst");
        let entries = vec![
            file("0/0/10", 3, "aa"),
            IndexEntry {
                kind: EntryKind::Symlink,
                target: Some("/elsewhere".into()),
                sha256: None,
                stored: None,
                ..file("0/0/link", 0, "")
            },
        ];
        let mut w = IndexWriter::create(&path).unwrap();
        for e in &entries {
            w.write(e).unwrap();
        }
        w.finish().unwrap();
        let back: Vec<IndexEntry> = read_index(&path).unwrap().map(Result::unwrap).collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn the_cursor_finds_entries_asked_in_walk_order_in_one_pass() {
        let prev = [
            "0/0/10",
            "0/0/10.gz",
            "0/1/20",
            "1/0/1",
            "1/0/11",
            "a-b",
            "testfile",
        ];
        let rows = prev.iter().map(|p| Ok(file(p, 1, "x")));
        let mut cursor = PrevIndex::new(rows);
        // The new walk: 0/0/10 is gone, 0/0/5, 1/0/2 and a/x are new.
        let asked = [
            "0/0/10.gz",
            "0/0/5",
            "1/0/1",
            "1/0/2",
            "a/x",
            "testfile",
            "zz",
        ];
        let found: Vec<bool> = asked.iter().map(|p| cursor.find(p).is_some()).collect();
        assert_eq!(found, [true, false, true, false, false, true, false]);
        assert!(cursor.problem.is_none());
    }

    #[test]
    fn a_damaged_previous_index_stops_reuse_without_failing() {
        let rows = vec![
            Ok(file("0/0/10", 1, "x")),
            Err(anyhow::anyhow!("bad line")),
            Ok(file("0/0/30", 1, "x")),
        ];
        let mut cursor = PrevIndex::new(rows.into_iter());
        assert!(cursor.find("0/0/10").is_some());
        assert!(cursor.find("0/0/30").is_none());
        assert!(cursor.problem.as_deref().unwrap().contains("bad line"));
    }

    #[test]
    fn unchanged_means_same_path_size_and_mtime() {
        let before = file("0/0/10", 7, "abc");
        let mut now = before.clone();
        now.sha256 = None;
        assert!(now.unchanged_since(&before));
        now.mtime_nsec += 1;
        assert!(!now.unchanged_since(&before));
        let mut bigger = before.clone();
        bigger.size = 8;
        assert!(!bigger.unchanged_since(&before));
    }
}
