//! Cutting the dump into content-defined chunks (FastCDC) as it streams, and
//! storing each chunk once in the shared object store, compressed by a small
//! pool of workers behind a bounded queue, so memory stays flat and the
//! dump's pipe keeps draining while chunks are compressed.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use anyhow::{Context, Result, anyhow, bail};
use fastcdc::v2020::{self, Normalization};

use crate::attachments::rolling::slice_of;
use crate::repo::config::ChunkerParams;
use crate::repo::digest::sha256_hex;
use crate::repo::manifest::DumpChunk;
use crate::repo::objects::{Encoding, ObjectStore, Packer, Staged};

/// New chunks a worker writes before it commits them (one `syncfs` each batch).
const COMMIT_BATCH_BYTES: u64 = 64 << 20;

/// Finds FastCDC cut points in a stream fed in pieces of any size. It keeps
/// at most `max_size` bytes plus one piece: a cut is only looked for once a
/// whole maximal chunk is buffered (or at the end), so the cuts are the
/// same as over the whole dump at once.
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    pending: Vec<u8>,
    offset: u64,
}

impl Chunker {
    /// Refuses sizes FastCDC does not accept (a hand-edited repository config).
    pub fn new(params: &ChunkerParams) -> Result<Chunker> {
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|n| n % 2 == 0);
        if !ok {
            bail!(
                "chunker sizes min {min}, avg {avg}, max {max} are not usable: FastCDC needs \
                 even sizes with {}..={} <= min <= avg <= max <= {}",
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX,
                v2020::MAXIMUM_MAX
            );
        }
        let (mask_s, mask_l) = v2020::select_masks(avg, Normalization::Level1);
        Ok(Chunker {
            min,
            avg,
            max,
            mask_s,
            mask_l,
            pending: Vec::with_capacity(2 * max),
            offset: 0,
        })
    }

    /// Adds `data`; `emit(offset, bytes)` receives every chunk completed.
    pub fn push(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(u64, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.pending.extend_from_slice(data);
        while self.pending.len() >= self.max {
            self.cut_one(&mut emit)?;
        }
        Ok(())
    }

    /// The rest, after the last byte.
    pub fn finish(mut self, mut emit: impl FnMut(u64, Vec<u8>) -> Result<()>) -> Result<()> {
        while !self.pending.is_empty() {
            self.cut_one(&mut emit)?;
        }
        Ok(())
    }

    fn cut_one(&mut self, emit: &mut impl FnMut(u64, Vec<u8>) -> Result<()>) -> Result<()> {
        let (_, end) = v2020::cut(
            &self.pending,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let end = end.clamp(1, self.pending.len());
        let rest = self.pending.split_off(end);
        let chunk = std::mem::replace(&mut self.pending, rest);
        let offset = self.offset;
        self.offset += chunk.len() as u64;
        emit(offset, chunk)
    }
}

/// The dump as stored: its chunks in order, and what storing them cost.
#[derive(Debug, Clone, Default)]
pub struct StoredChunks {
    pub chunks: Vec<DumpChunk>,
    /// Stored chunks rolling verification found corrupt: moved aside and
    /// written again from this dump's bytes.
    pub rewritten: Vec<String>,
    /// Bytes the dump's distinct chunks take in the store, whether this run
    /// wrote them or an earlier one did (what restoring the set needs).
    pub stored_bytes: u64,
    /// Chunks, and their stored bytes, that this run added to the store.
    pub new_chunks: u64,
    pub new_bytes: u64,
}

/// What a backup may take from the store without writing a chunk again.
#[derive(Debug, Default)]
pub struct Reuse {
    /// Stored sizes an earlier set recorded for its chunks: a stored chunk
    /// of another size is written again rather than trusted.
    pub recorded: HashMap<String, u64>,
    /// Rolling verification (`[verify] rolling_days`, this backup's slice):
    /// a stored chunk in the slice is read back before it is trusted, and
    /// written again from the dump's bytes when it no longer hashes to its
    /// name, as attachment objects are (`attachments::rolling`).
    pub rolling: Option<(u32, u32)>,
}

struct Job {
    index: u64,
    offset: u64,
    data: Vec<u8>,
}

struct Done {
    index: u64,
    chunk: DumpChunk,
    /// Stored size known to this worker (not for a chunk another worker of
    /// this run claimed first: filled in from that one's record).
    stored: Option<u64>,
    written: Option<u64>,
    /// Rolling verification found the stored copy corrupt.
    rewritten: bool,
}

/// Workers that hash, look up, compress and store chunks.
pub struct ChunkPool<'scope> {
    tx: Option<SyncSender<Job>>,
    workers: Vec<ScopedJoinHandle<'scope, Result<Vec<Done>>>>,
    failed: Arc<AtomicBool>,
    /// The first worker's error, for the reader that finds the queue shut.
    why: Arc<Mutex<Option<String>>>,
    next: u64,
}

impl<'scope> ChunkPool<'scope> {
    /// Starts `workers` threads (at least one) in `scope`; the queue holds
    /// two chunks per worker. `recorded` holds the stored sizes an earlier
    /// set recorded for its chunks: a stored chunk of another size is
    /// damaged (a crash, a truncation) and is written again, not reused.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        store: &'scope ObjectStore,
        reuse: &'scope Reuse,
        workers: usize,
    ) -> ChunkPool<'scope> {
        let workers = workers.max(1);
        let (tx, rx) = sync_channel::<Job>(2 * workers);
        let rx = Arc::new(Mutex::new(rx));
        let claimed = Arc::new(Mutex::new(HashSet::<String>::new()));
        let failed = Arc::new(AtomicBool::new(false));
        let why = Arc::new(Mutex::new(None));
        let handles = (0..workers)
            .map(|_| {
                let (rx, claimed) = (rx.clone(), claimed.clone());
                let (failed, why) = (failed.clone(), why.clone());
                scope.spawn(move || {
                    let result = work(store, reuse, &rx, &claimed);
                    if let Err(e) = &result {
                        if let Ok(mut why) = why.lock() {
                            why.get_or_insert_with(|| format!("{e:#}"));
                        }
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        ChunkPool {
            tx: Some(tx),
            workers: handles,
            failed,
            why,
            next: 0,
        }
    }

    /// Queues one chunk; blocks while the queue is full.
    pub fn send(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        let index = self.next;
        self.next += 1;
        let sent = match &self.tx {
            Some(tx) if !self.failed.load(Ordering::Relaxed) => tx
                .send(Job {
                    index,
                    offset,
                    data,
                })
                .is_ok(),
            _ => false,
        };
        if !sent {
            let why = self.why.lock().ok().and_then(|w| w.clone());
            bail!(
                "while storing the dump's chunks: {}",
                why.as_deref().unwrap_or("a chunk worker stopped")
            );
        }
        Ok(())
    }

    /// Waits for every chunk to be stored (committed, not yet synced: the
    /// caller's `ObjectStore::sync` comes before the manifest names them).
    pub fn finish(mut self) -> Result<StoredChunks> {
        drop(self.tx.take());
        let mut done = Vec::new();
        let mut first_error = None;
        for handle in self.workers.drain(..) {
            match handle.join() {
                Ok(Ok(d)) => done.extend(d),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow!("a chunk worker panicked"));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.context("while storing the dump's chunks"));
        }
        done.sort_by_key(|d| d.index);
        let mut sizes = HashMap::new();
        for d in &done {
            if let Some(stored) = d.stored {
                sizes.insert(d.chunk.sha256.clone(), stored);
            }
        }
        let mut out = StoredChunks::default();
        let mut counted = HashSet::new();
        for mut d in done {
            let stored = *sizes
                .get(&d.chunk.sha256)
                .context("a chunk without a stored size")?;
            d.chunk.stored_bytes = stored;
            if counted.insert(d.chunk.sha256.clone()) {
                out.stored_bytes += stored;
            }
            if d.rewritten {
                out.rewritten.push(d.chunk.sha256.clone());
            }
            if let Some(written) = d.written {
                out.new_chunks += 1;
                out.new_bytes += written;
            }
            out.chunks.push(d.chunk);
        }
        Ok(out)
    }
}

/// One worker: until the queue closes, each chunk is hashed; one this run
/// already claimed or the store holds (at the size recorded, if one was)
/// is recorded, any other written (replacing a damaged stored copy).
fn work(
    store: &ObjectStore,
    reuse: &Reuse,
    rx: &Mutex<Receiver<Job>>,
    claimed: &Mutex<HashSet<String>>,
) -> Result<Vec<Done>> {
    let mut packer = Packer::new()?;
    let mut done = Vec::new();
    let mut staged: Vec<(usize, Staged)> = Vec::new();
    let mut staged_bytes = 0;
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => bail!("the chunk queue was poisoned"),
        };
        let Ok(job) = job else { break };
        let sha256 = sha256_hex(&job.data);
        let chunk = DumpChunk {
            sha256: sha256.clone(),
            offset: job.offset,
            size: job.data.len() as u64,
            stored_bytes: 0,
        };
        let first = claimed
            .lock()
            .map_err(|_| anyhow!("the chunk list was poisoned"))?
            .insert(sha256.clone());
        if !first {
            done.push(Done {
                index: job.index,
                chunk,
                stored: None,
                written: None,
                rewritten: false,
            });
            continue;
        }
        let stored = store
            .stat(&sha256, Encoding::Zst)
            .filter(|(_, bytes)| reuse.recorded.get(&sha256).is_none_or(|want| want == bytes));
        let in_slice = reuse
            .rolling
            .is_some_and(|(days, slice)| slice_of(&sha256, days) == slice);
        let mut rewritten = false;
        if let Some((_, stored)) = stored {
            let intact =
                !in_slice || store.check(&sha256, Encoding::Zst).ok().flatten() == Some(chunk.size);
            if intact {
                done.push(Done {
                    index: job.index,
                    chunk,
                    stored: Some(stored),
                    written: None,
                    rewritten: false,
                });
                continue;
            }
            // Out of the way first, so the fresh copy is a new object.
            store
                .quarantine(&sha256, Encoding::Zst)
                .with_context(|| format!("while moving the corrupt dump chunk {sha256} aside"))?;
            rewritten = true;
        }
        let mut writer = store.writer(Encoding::Zst, &mut packer)?;
        writer
            .write_all(&job.data)
            .with_context(|| format!("while writing dump chunk {sha256}"))?;
        let object = writer.finish()?;
        if object.info.sha256 != sha256 {
            bail!("dump chunk {sha256} hashed differently while it was written");
        }
        staged_bytes += object.info.stored_bytes;
        staged.push((done.len(), object));
        done.push(Done {
            index: job.index,
            chunk,
            stored: None,
            written: None,
            rewritten,
        });
        if staged_bytes >= COMMIT_BATCH_BYTES {
            commit(store, &mut staged, &mut done)?;
            staged_bytes = 0;
        }
    }
    commit(store, &mut staged, &mut done)?;
    Ok(done)
}

/// Commits the staged chunks and records their stored sizes.
fn commit(store: &ObjectStore, staged: &mut Vec<(usize, Staged)>, done: &mut [Done]) -> Result<()> {
    let batch: Vec<(usize, Staged)> = std::mem::take(staged);
    let places: Vec<(usize, u64)> = batch
        .iter()
        .map(|(at, s)| (*at, s.info.stored_bytes))
        .collect();
    let committed = store.commit(batch.into_iter().map(|(_, s)| s).collect())?;
    for ((at, stored), c) in places.into_iter().zip(committed) {
        done[at].stored = Some(stored);
        done[at].written = Some(c.written_bytes).filter(|_| c.new);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    fn cuts(data: &[u8], piece: usize) -> Vec<(u64, usize)> {
        let mut c = Chunker::new(&params()).unwrap();
        let mut out = Vec::new();
        for p in data.chunks(piece) {
            c.push(p, |o, d| {
                out.push((o, d.len()));
                Ok(())
            })
            .unwrap();
        }
        c.finish(|o, d| {
            out.push((o, d.len()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_stream_is_read() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let data: Vec<u8> = (0..300_000).map(|_| rng.random::<u8>() % 16).collect();
        let whole = cuts(&data, data.len());
        assert!(whole.len() > 20, "{}", whole.len());
        for piece in [1, 1000, 4096, 65536] {
            assert_eq!(cuts(&data, piece), whole, "pieces of {piece}");
        }
        let mut at = 0;
        for (offset, len) in &whole {
            assert_eq!(*offset, at);
            assert!(*len <= 16384);
            at += *len as u64;
        }
        assert_eq!(at, data.len() as u64);
    }

    #[test]
    fn an_edit_changes_only_the_chunks_around_it() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let data: Vec<u8> = (0..400_000).map(|_| rng.random::<u8>()).collect();
        let mut edited = data.clone();
        edited[200_000] ^= 0xff;
        let a = cuts(&data, 8192);
        let b = cuts(&edited, 8192);
        let same = a.iter().filter(|c| b.contains(c)).count();
        assert!(same + 3 >= a.len(), "{same} of {} kept", a.len());
    }

    #[test]
    fn unusable_sizes_are_refused() {
        for (min, avg, max) in [(0, 4096, 16384), (8192, 4096, 16384), (1023, 4096, 16384)] {
            let p = ChunkerParams {
                min_size: min,
                avg_size: avg,
                max_size: max,
            };
            assert!(Chunker::new(&p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn chunks_are_stored_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let block: Vec<u8> = (0..100_000).map(|_| rng.random::<u8>() % 8).collect();
        // The same content twice within one dump, and again in a second one.
        let data = [block.clone(), block.clone()].concat();
        let recorded = Reuse::default();
        let run = |data: &[u8]| {
            std::thread::scope(|scope| {
                let mut pool = ChunkPool::start(scope, &store, &recorded, 2);
                let mut c = Chunker::new(&params()).unwrap();
                c.push(data, |o, d| pool.send(o, d)).unwrap();
                c.finish(|o, d| pool.send(o, d)).unwrap();
                pool.finish().unwrap()
            })
        };
        let first = run(&data);
        let total: u64 = first.chunks.iter().map(|c| c.size).sum();
        assert_eq!(total, data.len() as u64);
        let distinct: std::collections::BTreeSet<_> =
            first.chunks.iter().map(|c| c.sha256.clone()).collect();
        assert!(
            distinct.len() < first.chunks.len(),
            "repeated content shares chunks"
        );
        assert_eq!(first.new_chunks, distinct.len() as u64);
        assert_eq!(first.new_bytes, first.stored_bytes);
        let mut back = Vec::new();
        for c in &first.chunks {
            assert!(c.stored_bytes > 0);
            std::io::copy(
                &mut store.reader(&c.sha256, Encoding::Zst).unwrap(),
                &mut back,
            )
            .unwrap();
        }
        assert_eq!(back, data);
        let second = run(&data);
        assert_eq!((second.new_chunks, second.new_bytes), (0, 0));
        assert_eq!(second.chunks, first.chunks);
        assert_eq!(second.stored_bytes, first.stored_bytes);
    }
}
