//! The content-addressed object store shared by all sets: file data named by
//! the SHA-256 of its original bytes, each object written (temporary name,
//! synced, renamed into place) and never modified in place afterwards.
//!
//! Keys: `objects/<h0h1>/<sha256>` (stored as is) or `<sha256>.zst` (zstd),
//! all I/O through the repository's [`Storage`]. Locally `objects/.tmp/`
//! holds objects being written and is emptied by the next writer
//! (`Repository::remove_leftovers`); `objects/.corrupt/` holds objects moved
//! aside because their content no longer hashes to their name.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::digest::HashWriter;
use super::storage::{LocalStorage, Storage, is_not_found};

/// The directory of objects being written, inside `objects/`.
pub use super::storage::local::TMP_DIR;
/// Where objects found corrupt are moved aside, inside `objects/`: kept
/// for inspection, never read by restore; the next backup writes the
/// object again from the live store when the data is still there.
pub const CORRUPT_DIR: &str = ".corrupt";
/// zstd level for compressible data: fast, and most of the gain.
const ZSTD_LEVEL: i32 = 3;
/// Compressing must save at least this share of the sample to be worth it.
const MIN_SAVING_PERCENT: usize = 10;

/// How an object's bytes are kept on disk; the file name's suffix says it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The original bytes (already compressed data, e.g. Kopano's `.gz`).
    Raw,
    /// One zstd stream of the original bytes; file name ends in `.zst`.
    Zst,
}

impl Encoding {
    fn suffix(self) -> &'static str {
        match self {
            Encoding::Raw => "",
            Encoding::Zst => ".zst",
        }
    }
}

/// Per-thread compression state, reused from object to object: setting up
/// a zstd context costs more than compressing a small attachment.
pub struct Packer {
    stream: zstd::zstd_safe::CCtx<'static>,
    trial: zstd::bulk::Compressor<'static>,
    trial_out: Vec<u8>,
}

impl Packer {
    pub fn new() -> Result<Packer> {
        let mut stream = zstd::zstd_safe::CCtx::create();
        stream
            .set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(ZSTD_LEVEL))
            .map_err(|code| anyhow::anyhow!("zstd: {}", zstd::zstd_safe::get_error_name(code)))?;
        Ok(Packer {
            stream,
            trial: zstd::bulk::Compressor::new(1)?,
            trial_out: Vec::new(),
        })
    }

    /// Zstd when a trial compression of the data's first bytes saves
    /// something worth the CPU; raw for already compressed formats.
    pub fn choose(&mut self, head: &[u8]) -> Encoding {
        if head.len() < 64 || is_compressed_format(head) {
            return Encoding::Raw;
        }
        self.trial_out.clear();
        self.trial_out.reserve(zstd::compress_bound(head.len()));
        match self.trial.compress_to_buffer(head, &mut self.trial_out) {
            Ok(n) if n * 100 <= head.len() * (100 - MIN_SAVING_PERCENT) => Encoding::Zst,
            _ => Encoding::Raw,
        }
    }
}

/// Magic numbers of formats that do not compress further (Kopano's list and a few more).
fn is_compressed_format(head: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x1f\x8b",         // gzip
        b"PK\x03\x04",       // zip, docx, xlsx, odt
        b"\xff\xd8\xff",     // jpeg
        b"\x89PNG",          // png
        b"GIF8",             // gif
        b"Rar!",             // rar
        b"\xfd7zXZ",         // xz
        b"BZh",              // bzip2
        b"ID3",              // mp3
        b"\x28\xb5\x2f\xfd", // zstd
        b"7z\xbc\xaf",       // 7-zip
    ];
    MAGIC.iter().any(|m| head.starts_with(m))
}

/// What an object is: its name, original size, and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub sha256: String,
    /// Size of the original bytes.
    pub size: u64,
    pub encoding: Encoding,
    /// Size of the file as stored.
    pub stored_bytes: u64,
}

/// An object written to its temporary name, not yet in the store.
#[derive(Debug)]
pub struct Staged {
    pub info: ObjectInfo,
    temp: PathBuf,
}

impl Staged {
    /// Hands the temporary file over to the store (which moves or drops it).
    fn take(mut self) -> PathBuf {
        std::mem::take(&mut self.temp)
    }
}

impl Drop for Staged {
    /// A staged object that was not committed (e.g. its source changed
    /// while being read) is removed.
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Counts bytes on their way to the temporary file.
struct Counter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Sink<'a> {
    Raw(Counter<BufWriter<File>>),
    Zst(zstd::Encoder<'a, Counter<BufWriter<File>>>),
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Raw(w) => w.write(buf),
            Sink::Zst(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Raw(w) => w.flush(),
            Sink::Zst(w) => w.flush(),
        }
    }
}

/// Receives one object's original bytes; hashes and (maybe) compresses them
/// on the way to a temporary file.
pub struct ObjectWriter<'a> {
    inner: HashWriter<Sink<'a>>,
    encoding: Encoding,
    temp: PathBuf,
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter<'_> {
    /// Completes the temporary file (closed, not yet synced).
    pub fn finish(self) -> Result<Staged> {
        let (sink, size, sha256) = self.inner.finish();
        let counter = match sink {
            Sink::Raw(c) => c,
            Sink::Zst(z) => z.finish()?,
        };
        let stored_bytes = counter.bytes;
        counter
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("while writing {}", self.temp.display()))?;
        Ok(Staged {
            info: ObjectInfo {
                sha256,
                size,
                encoding: self.encoding,
                stored_bytes,
            },
            temp: self.temp,
        })
    }
}

/// What committing a staged object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// False when an identical object was already stored (the copy is dropped).
    pub new: bool,
    /// Bytes added to the repository (0 when not new).
    pub written_bytes: u64,
}

const NOT_NEW: Committed = Committed {
    new: false,
    written_bytes: 0,
};

fn other(encoding: Encoding) -> Encoding {
    match encoding {
        Encoding::Raw => Encoding::Zst,
        Encoding::Zst => Encoding::Raw,
    }
}

/// The objects of a repository, on its [`Storage`].
pub struct ObjectStore {
    storage: Arc<dyn Storage>,
    /// The key prefix of every object: `objects/`, or empty for a store
    /// opened on a bare directory.
    prefix: String,
}

impl ObjectStore {
    /// Opens a store of objects directly in the local directory `dir`.
    /// Nothing is written until an object is: readers (verify, restore) may
    /// work on a read-only repository. Commands use `Repository::objects`.
    pub fn open(dir: &Path) -> Result<ObjectStore> {
        Ok(ObjectStore::on(Arc::new(LocalStorage::new(dir)), ""))
    }

    /// The store below key `prefix` (`objects`) of `storage`.
    pub fn on(storage: Arc<dyn Storage>, prefix: &str) -> ObjectStore {
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        ObjectStore { storage, prefix }
    }

    /// What the store is kept on.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The key prefix of every object (`objects/`, or empty).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of an object.
    pub fn key(&self, sha256: &str, encoding: Encoding) -> String {
        let shard = sha256.get(..2).unwrap_or("xx");
        format!("{}{shard}/{sha256}{}", self.prefix, encoding.suffix())
    }

    /// Where an object is, for messages and tests (a real path on local storage).
    pub fn path(&self, sha256: &str, encoding: Encoding) -> PathBuf {
        PathBuf::from(self.storage.locate(&self.key(sha256, encoding)))
    }

    fn stored_size(&self, sha256: &str, encoding: Encoding) -> Option<u64> {
        // A name that is no key (not hex) is simply not stored.
        self.storage
            .stat(&self.key(sha256, encoding))
            .ok()
            .flatten()
    }

    /// How the object is stored, if it is (`preferred` is looked up first).
    pub fn find(&self, sha256: &str, preferred: Encoding) -> Option<Encoding> {
        self.stat(sha256, preferred).map(|(e, _)| e)
    }

    pub fn exists(&self, sha256: &str) -> bool {
        self.find(sha256, Encoding::Zst).is_some()
    }

    /// How the object is stored and the size of its file, by `stat` alone
    /// (`preferred` is looked up first).
    pub fn stat(&self, sha256: &str, preferred: Encoding) -> Option<(Encoding, u64)> {
        [preferred, other(preferred)]
            .into_iter()
            .find_map(|e| self.stored_size(sha256, e).map(|size| (e, size)))
    }

    /// Reads the object in `encoding` to the end and tells whether its
    /// content still hashes to its name: `Ok(Some(size))` when it does,
    /// `Ok(None)` when it is corrupt (wrong content, undecodable, unreadable
    /// data). `Err` only when it cannot be opened at all.
    pub fn check(&self, sha256: &str, encoding: Encoding) -> Result<Option<u64>> {
        let stored = self.storage.get(&self.key(sha256, encoding))?;
        let reader: Box<dyn Read> = match encoding {
            Encoding::Raw => Box::new(stored),
            Encoding::Zst => match zstd::Decoder::with_buffer(stored) {
                Ok(d) => Box::new(d),
                Err(_) => return Ok(None),
            },
        };
        let mut reader = super::digest::HashReader::new(reader);
        if io::copy(&mut reader, &mut io::sink()).is_err() {
            return Ok(None);
        }
        let (size, actual) = reader.finish();
        Ok((actual == sha256).then_some(size))
    }

    /// Moves a corrupt object aside into `objects/.corrupt/`, so no set
    /// reads it again; the name stays unique when the same object is found
    /// corrupt twice. Returns where it went.
    pub fn quarantine(&self, sha256: &str, encoding: Encoding) -> Result<PathBuf> {
        let key = self.key(sha256, encoding);
        let aside = format!("{}{CORRUPT_DIR}", self.prefix);
        let name = format!("{sha256}{}", encoding.suffix());
        for n in 0..1000 {
            let to = match n {
                0 => format!("{aside}/{name}"),
                n => format!("{aside}/{name}.{n}"),
            };
            match self.storage.move_aside(&key, &to) {
                Ok(true) => return Ok(PathBuf::from(self.storage.locate(&to))),
                Ok(false) => continue,
                // Another reader that found it corrupt too was first.
                Err(e) if is_not_found(&e) => {
                    bail!(
                        "already moved to {} by another run",
                        self.storage.locate(&aside)
                    )
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "while moving the corrupt object {} aside",
                            self.storage.locate(&key)
                        )
                    });
                }
            }
        }
        bail!(
            "too many copies of object {name} in {}",
            self.storage.locate(&aside)
        )
    }

    /// Starts a new object under a temporary name.
    pub fn writer<'a>(
        &self,
        encoding: Encoding,
        packer: &'a mut Packer,
    ) -> Result<ObjectWriter<'a>> {
        let staged = self.storage.stage(self.prefix.trim_end_matches('/'))?;
        let counter = Counter {
            inner: BufWriter::with_capacity(256 * 1024, staged.file),
            bytes: 0,
        };
        let sink = match encoding {
            Encoding::Raw => Sink::Raw(counter),
            Encoding::Zst => Sink::Zst(zstd::Encoder::with_context(counter, &mut packer.stream)),
        };
        Ok(ObjectWriter {
            inner: HashWriter::new(sink),
            encoding,
            temp: staged.path,
        })
    }

    /// Makes staged objects durable, then stores each under its name
    /// unless it is already stored (in either encoding). One `syncfs` for
    /// the batch instead of one `fsync` per file: the cost of many small
    /// attachments is the flush.
    pub fn commit(&self, batch: Vec<Staged>) -> Result<Vec<Committed>> {
        let mut out = vec![NOT_NEW; batch.len()];
        let mut sizes = Vec::with_capacity(batch.len());
        let mut to_store = Vec::with_capacity(batch.len());
        for (n, staged) in batch.into_iter().enumerate() {
            let info = &staged.info;
            if u8::from_str_radix(info.sha256.get(..2).unwrap_or("zz"), 16).is_err() {
                bail!("not a SHA-256: {:?}", info.sha256);
            }
            // The same content stored in the other encoding counts as stored.
            let other = other(info.encoding);
            if self.stored_size(&info.sha256, other).is_some()
                && self.stored_size(&info.sha256, info.encoding).is_none()
            {
                continue;
            }
            let key = self.key(&info.sha256, info.encoding);
            sizes.push((n, info.stored_bytes));
            to_store.push((staged.take(), key));
        }
        let new = self.storage.commit(to_store)?;
        for ((n, bytes), new) in sizes.into_iter().zip(new) {
            out[n] = Committed {
                new,
                written_bytes: if new { bytes } else { 0 },
            };
        }
        Ok(out)
    }

    /// Convenience for one object: write `reader` and commit it at once.
    pub fn put(
        &self,
        reader: &mut dyn Read,
        encoding: Encoding,
    ) -> Result<(ObjectInfo, Committed)> {
        let mut packer = Packer::new()?;
        let mut writer = self.writer(encoding, &mut packer)?;
        io::copy(reader, &mut writer).context("while storing an object")?;
        let staged = writer.finish()?;
        let info = staged.info.clone();
        let committed = self.commit(vec![staged])?.remove(0);
        Ok((info, committed))
    }

    /// The barrier before a manifest may name these objects: every shard
    /// directory that received an object is synced.
    pub fn sync(&self) -> Result<()> {
        self.storage.barrier()
    }

    /// Reads an object back: its original bytes, decompressed if needed.
    pub fn reader(&self, sha256: &str, preferred: Encoding) -> Result<Box<dyn Read + Send>> {
        let Some(encoding) = self.find(sha256, preferred) else {
            bail!("object {sha256} is not in the repository");
        };
        let stored = self.storage.get(&self.key(sha256, encoding))?;
        Ok(match encoding {
            Encoding::Raw => Box::new(stored),
            Encoding::Zst => Box::new(zstd::Decoder::with_buffer(stored)?),
        })
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
