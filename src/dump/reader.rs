//! The one reader of a set's stored dump, for restore, verify and drill: the
//! chunks streamed in order, each checked (length and SHA-256) before any of
//! its bytes is handed on, and the whole dump's SHA-256 checked at its end.
//! Sets written before chunking read their single `db.sql.zst` instead.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::error::Damaged;
use crate::repo::chunk_list::{self, ChunkLines};
use crate::repo::digest::sha256_hex;
use crate::repo::manifest::{DumpChunk, Manifest};
use crate::repo::objects::{Encoding, ObjectStore};

/// What is wrong with one chunk of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// No object of that name in the store.
    Missing,
    /// The object is there but could not be opened.
    Unreadable(String),
    /// The object's content no longer hashes to its name (or does not decode).
    Corrupt(String),
    /// The object is intact but not of the size the set records.
    WrongSize(String),
}

/// A bad chunk, with the byte range of the dump it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProblem {
    pub chunk: DumpChunk,
    pub damage: Damage,
}

impl ChunkProblem {
    /// `chunk <sha> (bytes a..b of the dump)`: the finding's subject.
    pub fn subject(&self) -> String {
        let c = &self.chunk;
        format!(
            "chunk {} (bytes {}..{} of the dump)",
            c.sha256,
            c.offset,
            c.offset + c.size
        )
    }

    /// What is wrong, to follow the subject.
    pub fn detail(&self) -> String {
        match &self.damage {
            Damage::Missing => "is missing".into(),
            Damage::Unreadable(why) => format!("cannot be read: {why}"),
            Damage::Corrupt(why) => format!("is corrupt: {why}"),
            Damage::WrongSize(why) => format!("is not as recorded: {why}"),
        }
    }

    /// The object itself is bad (not the set's record of it).
    pub fn object_corrupt(&self) -> bool {
        matches!(self.damage, Damage::Corrupt(_))
    }
}

impl fmt::Display for ChunkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject(), self.detail())
    }
}

impl std::error::Error for ChunkProblem {}

/// Reads one chunk into `buf` (replacing its content) and checks it: at most
/// one byte more than its recorded size is ever read.
pub fn read_chunk(
    store: &ObjectStore,
    chunk: &DumpChunk,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), ChunkProblem> {
    let problem = |damage| ChunkProblem {
        chunk: chunk.clone(),
        damage,
    };
    let Some((encoding, _)) = store.stat(&chunk.sha256, Encoding::Zst) else {
        return Err(problem(Damage::Missing));
    };
    let reader = store
        .reader(&chunk.sha256, encoding)
        .map_err(|e| problem(Damage::Unreadable(format!("{e:#}"))))?;
    buf.clear();
    if let Err(e) = reader.take(chunk.size + 1).read_to_end(buf) {
        return Err(problem(Damage::Corrupt(format!(
            "it cannot be decoded: {e}"
        ))));
    }
    if buf.len() as u64 > chunk.size {
        return Err(problem(Damage::WrongSize(format!(
            "it holds more than the {} bytes the set records",
            chunk.size
        ))));
    }
    if sha256_hex(buf) != chunk.sha256 {
        return Err(problem(Damage::Corrupt(
            "its content no longer hashes to its name".into(),
        )));
    }
    if buf.len() as u64 != chunk.size {
        return Err(problem(Damage::WrongSize(format!(
            "it holds {} bytes; the set records {}",
            buf.len(),
            chunk.size
        ))));
    }
    Ok(())
}

/// Where the dump's bytes come from.
enum Source<'a> {
    Chunks {
        store: &'a ObjectStore,
        chunks: ChunkLines,
        buf: Vec<u8>,
        pos: usize,
    },
    File(Box<zstd::Decoder<'static, BufReader<File>>>),
}

/// The dump's SQL text; an error names the first bad chunk (an
/// [`io::Error`] wrapping a [`ChunkProblem`]) or the checksum mismatch.
pub struct DumpReader<'a> {
    source: Source<'a>,
    hasher: Sha256,
    bytes: u64,
    expect_bytes: u64,
    expect_sha256: &'a str,
    checked: bool,
}

/// What a set's dump is stored as, for messages: its file, or its chunks.
pub fn describe(set_dir: &Path, manifest: &Manifest) -> String {
    let db = &manifest.database;
    if db.chunk_list.is_empty() {
        set_dir.join(&db.file).display().to_string()
    } else {
        format!("the dump's {} chunks", db.chunk_count)
    }
}

/// The legacy single file of a set written before chunking.
pub fn legacy_file(set_dir: &Path, manifest: &Manifest) -> Option<PathBuf> {
    let db = &manifest.database;
    db.chunk_list.is_empty().then(|| set_dir.join(&db.file))
}

/// Opens the dump of the set in `set_dir`.
pub fn open<'a>(
    set_dir: &Path,
    manifest: &'a Manifest,
    store: &'a ObjectStore,
) -> Result<DumpReader<'a>> {
    let db = &manifest.database;
    let source = match legacy_file(set_dir, manifest) {
        Some(path) => {
            let file =
                File::open(&path).with_context(|| format!("while opening {}", path.display()))?;
            let decoder = zstd::Decoder::new(file)
                .with_context(|| format!("while reading {}", path.display()))?;
            Source::File(Box::new(decoder))
        }
        None => Source::Chunks {
            store,
            chunks: chunk_list::open(set_dir, manifest).map_err(Damaged::from)?,
            buf: Vec::new(),
            pos: 0,
        },
    };
    Ok(DumpReader {
        source,
        hasher: Sha256::new(),
        bytes: 0,
        expect_bytes: db.bytes,
        expect_sha256: &db.sha256,
        checked: false,
    })
}

impl Read for DumpReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.source {
            Source::File(decoder) => decoder.read(out)?,
            Source::Chunks {
                store,
                chunks,
                buf,
                pos,
            } => {
                while *pos == buf.len() {
                    let Some(chunk) = chunks.next() else {
                        break;
                    };
                    let chunk = chunk.map_err(|e| io::Error::other(Damaged::from(e)))?;
                    read_chunk(store, &chunk, buf).map_err(io::Error::other)?;
                    *pos = 0;
                }
                let n = (buf.len() - *pos).min(out.len());
                out[..n].copy_from_slice(&buf[*pos..*pos + n]);
                *pos += n;
                n
            }
        };
        if n == 0 && !self.checked {
            self.checked = true;
            let sha256 = hex::encode(self.hasher.clone().finalize());
            if self.bytes != self.expect_bytes || sha256 != self.expect_sha256 {
                return Err(io::Error::other(Damaged(format!(
                    "the dump read back is {} bytes with SHA-256 {sha256}; the set records {} \
                     bytes, {}",
                    self.bytes, self.expect_bytes, self.expect_sha256
                ))));
            }
        }
        self.hasher.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(store: &ObjectStore, data: &[u8]) -> DumpChunk {
        let (info, _) = store.put(&mut &data[..], Encoding::Zst).unwrap();
        DumpChunk {
            sha256: info.sha256,
            offset: 4096,
            size: data.len() as u64,
            stored_bytes: info.stored_bytes,
        }
    }

    #[test]
    fn each_chunk_is_checked_and_named_with_its_byte_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let data = b"INSERT INTO `hierarchy` VALUES (1,2,3);\n".repeat(100);
        let chunk = stored(&store, &data);
        let mut buf = Vec::new();
        read_chunk(&store, &chunk, &mut buf).unwrap();
        assert_eq!(buf, data);

        let longer = DumpChunk {
            size: chunk.size - 1,
            ..chunk.clone()
        };
        let e = read_chunk(&store, &longer, &mut buf).unwrap_err();
        assert!(matches!(e.damage, Damage::WrongSize(_)), "{e}");
        assert!(!e.object_corrupt());

        let path = store.path(&chunk.sha256, Encoding::Zst);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 6;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_chunk(&store, &chunk, &mut buf).unwrap_err();
        assert!(e.object_corrupt(), "{e}");

        std::fs::remove_file(&path).unwrap();
        let e = read_chunk(&store, &chunk, &mut buf).unwrap_err();
        let end = 4096 + data.len();
        assert_eq!(
            e.to_string(),
            format!(
                "chunk {} (bytes 4096..{end} of the dump) is missing",
                chunk.sha256
            )
        );
    }
}
