//! Moving a set's bytes from one repository to another through the
//! [`Storage`](super::Storage) interface only: objects the target lacks are
//! streamed over, hashed on the way (a corrupt source object is never
//! stored), committed in batches by parallel workers; the set's own files
//! are checked against its manifest before the target may publish them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};

use super::digest::{HashReader, HashWriter, sha256_hex};
use super::manifest::{MANIFEST, MANIFEST_SUM, Manifest};
use super::objects::{Encoding, ObjectStore};
use super::set::SetInfo;
use crate::error::Damaged;

/// Objects one worker stages before it commits them as a batch.
const BATCH_OBJECTS: usize = 64;
/// Bytes one worker stages before it commits them as a batch.
const BATCH_BYTES: u64 = 32 << 20;

/// What moving a set's objects did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ObjectsMoved {
    /// Objects sent to the target (it lacked them, or held a copy of the wrong size).
    pub sent: u64,
    /// Objects the target already held at the right size: not sent.
    pub present: u64,
    /// Bytes sent, as stored.
    pub bytes: u64,
}

/// Copies to `to` every object of `refs` (SHA-256 and recorded encoding)
/// that `to` lacks, reading from `from`, with `parallel` workers. Each
/// object is hashed while it streams; one that does not hash to its name
/// (or is missing in `from`) fails the copy as [`Damaged`] and is not
/// stored. `committed(objects, bytes)` is told after each batch is stored
/// in the target (durable), so a killed copy loses at most the batches
/// in flight.
pub fn copy_objects(
    from: &ObjectStore,
    to: &ObjectStore,
    refs: &BTreeMap<String, Encoding>,
    parallel: usize,
    committed: &(dyn Fn(u64, u64) + Sync),
) -> Result<ObjectsMoved> {
    let queue = Mutex::new(refs.iter());
    let failed = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let present = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let worker = || -> Result<()> {
        let mut batch: Vec<(PathBuf, String)> = Vec::new();
        let mut batch_bytes = 0u64;
        let flush = |batch: &mut Vec<(PathBuf, String)>, batch_bytes: &mut u64| -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let n = batch.len() as u64;
            to.storage().commit(std::mem::take(batch))?;
            sent.fetch_add(n, Ordering::Relaxed);
            bytes.fetch_add(*batch_bytes, Ordering::Relaxed);
            committed(n, *batch_bytes);
            *batch_bytes = 0;
            Ok(())
        };
        let result = (|| -> Result<()> {
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                crate::signals::check()?;
                let next = queue
                    .lock()
                    .map_err(|_| anyhow!("the copy queue was poisoned"))?
                    .next();
                let Some((sha, recorded)) = next else { break };
                let Some((encoding, size)) = from.stat(sha, *recorded) else {
                    return Err(Damaged(format!(
                        "object {sha} is missing in {}",
                        from.storage().location()
                    ))
                    .into());
                };
                if to
                    .stat(sha, encoding)
                    .is_some_and(|(e, n)| e != encoding || n == size)
                {
                    present.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let key = to.key(sha, encoding);
                let staged = stage_checked(from, to, sha, encoding)?;
                batch.push((staged, key));
                batch_bytes += size;
                if batch.len() >= BATCH_OBJECTS || batch_bytes >= BATCH_BYTES {
                    flush(&mut batch, &mut batch_bytes)?;
                }
            }
            flush(&mut batch, &mut batch_bytes)
        })();
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
            for (path, _) in batch {
                let _ = std::fs::remove_file(path);
            }
        }
        result
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel.max(1)).map(|_| scope.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a copy worker panicked")))
            })
            .collect()
    });
    // A damaged object says more than the stop it caused elsewhere.
    let mut errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
    if let Some(i) = errors
        .iter()
        .position(|e| e.downcast_ref::<Damaged>().is_some())
    {
        return Err(errors.swap_remove(i));
    }
    if let Some(e) = errors.pop() {
        return Err(e);
    }
    to.sync()?;
    Ok(ObjectsMoved {
        sent: sent.into_inner(),
        present: present.into_inner(),
        bytes: bytes.into_inner(),
    })
}

/// Passes what it reads through to a file as well.
struct Tee<R> {
    inner: R,
    copy: BufWriter<File>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Streams object `sha` from `from` into a file staged in `to`, checking on
/// the way that its content hashes to its name; returns the staged file.
fn stage_checked(
    from: &ObjectStore,
    to: &ObjectStore,
    sha: &str,
    encoding: Encoding,
) -> Result<PathBuf> {
    let key = from.key(sha, encoding);
    let staged = to.storage().stage(to.prefix().trim_end_matches('/'))?;
    let path = staged.path;
    let checked = (|| -> Result<String> {
        let stored = from
            .storage()
            .get(&key)
            .with_context(|| format!("while reading {}", from.storage().locate(&key)))?;
        let mut tee = Tee {
            inner: stored,
            copy: BufWriter::with_capacity(256 * 1024, staged.file),
        };
        let actual = match encoding {
            Encoding::Raw => {
                let mut hashed = HashReader::new(&mut tee);
                io::copy(&mut hashed, &mut io::sink())?;
                hashed.finish().1
            }
            Encoding::Zst => {
                let decoded = {
                    let mut hashed =
                        HashReader::new(zstd::Decoder::with_buffer(io::BufReader::new(&mut tee))?);
                    io::copy(&mut hashed, &mut io::sink()).map(|_| hashed.finish().1)
                };
                // Whatever follows the frame is copied too, so the stored
                // copy is byte for byte the source's.
                io::copy(&mut tee, &mut io::sink())?;
                decoded.unwrap_or_else(|e| format!("(undecodable: {e})"))
            }
        };
        tee.copy
            .into_inner()
            .map_err(|e| e.into_error())
            .context("while writing a staged object")?;
        Ok(actual)
    })();
    match checked {
        Ok(actual) if actual == sha => Ok(path),
        Ok(actual) => {
            let _ = std::fs::remove_file(&path);
            Err(Damaged(format!(
                "object {} in the source is corrupt (its content hashes to {actual})",
                from.storage().locate(&key)
            ))
            .into())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e.context(format!("while copying object {sha}")))
        }
    }
}

/// Writes every file of `set` into the local directory `into`, each checked
/// on the way against the manifest's size and SHA-256 (the manifest against
/// its checksum file). Returns the bytes written.
pub fn copy_set_files(set: &SetInfo, manifest: &Manifest, into: &Path) -> Result<u64> {
    let mut total = 0;
    let names = set.file_names()?;
    let manifest_sum = {
        let mut text = String::new();
        set.open(MANIFEST_SUM)?
            .read_to_string(&mut text)
            .with_context(|| format!("while reading {MANIFEST_SUM} of set {}", set.id))?;
        text.split_whitespace().next().unwrap_or("").to_owned()
    };
    for name in &names {
        let expected = match name.as_str() {
            MANIFEST => Some((None, manifest_sum.clone())),
            MANIFEST_SUM => None,
            other => match manifest.files.iter().find(|f| f.name == other) {
                Some(f) => Some((Some(f.bytes), f.sha256.clone())),
                None => bail!(Damaged(format!(
                    "set {} holds {other}, which its manifest does not name",
                    set.id
                ))),
            },
        };
        let path = into.join(name);
        let file =
            File::create(&path).with_context(|| format!("while creating {}", path.display()))?;
        let mut out = HashWriter::new(BufWriter::with_capacity(256 * 1024, file));
        io::copy(&mut set.open(name)?, &mut out)
            .with_context(|| format!("while copying {name} of set {}", set.id))?;
        let (w, bytes, sha) = out.finish();
        w.into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("while writing {}", path.display()))?;
        if let Some((size, want)) = expected
            && (sha != want || size.is_some_and(|s| s != bytes))
        {
            return Err(Damaged(format!(
                "{name} of set {} does not match its manifest (SHA-256 {sha}, expected {want})",
                set.id
            ))
            .into());
        }
        total += bytes;
    }
    for f in &manifest.files {
        if !names.contains(&f.name) {
            return Err(Damaged(format!(
                "set {} lacks {}, which its manifest names",
                set.id, f.name
            ))
            .into());
        }
    }
    Ok(total)
}

/// The SHA-256 of a published set's manifest (to tell whether two
/// repositories hold the same set under one id).
pub fn manifest_sha(set: &SetInfo) -> Result<String> {
    let mut bytes = Vec::new();
    set.open(MANIFEST)?.read_to_end(&mut bytes)?;
    Ok(sha256_hex(&bytes))
}
