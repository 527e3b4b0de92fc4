//! The capture pipeline: the walk (one thread) decides per file whether the
//! previous set's checksum can be reused; files that must be read go to a
//! few workers that hash and store them; results come back in walk order
//! through a bounded window, so the index streams out sorted.

use std::collections::VecDeque;
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::Instant;

use anyhow::{Result, anyhow};

use super::index::{EntryKind, IndexEntry, IndexWriter, PrevIndex, read_index};
use super::{CaptureStats, note};
use crate::cancel::Cancel;
use crate::progress::Progress;
use crate::repo::objects::{Encoding, ObjectStore, Packer, Staged};
use crate::walk::{Walked, Walker};

/// Entries between the walk and the index writer (bounds memory).
pub(crate) const WINDOW: usize = 256;
/// Read buffer per worker.
const BUF: usize = 256 * 1024;
/// The first bytes of a file, trial-compressed to decide how to store it.
const SAMPLE: usize = 16 * 1024;
/// How often a file that changes while being read is tried.
const TRIES: usize = 3;
/// Staged objects are made durable together once this many pile up.
pub(crate) const BATCH_OBJECTS: usize = 4096;
pub(crate) const BATCH_BYTES: u64 = 512 << 20;

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Threads that read and hash files.
    pub workers: usize,
    /// The previous complete set's index; `None` reads every file (`--rehash`).
    pub previous_index: Option<PathBuf>,
    /// Follow symlinks to directories outside the tree (`[attachments]
    /// follow_symlinks = "directories"`) and capture them as if in place.
    pub follow_dirs: bool,
    /// Raised when the dump running alongside failed: the walk stops.
    pub cancel: Cancel,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            previous_index: None,
            follow_dirs: true,
            cancel: Cancel::default(),
        }
    }
}

/// What a worker made of one file.
enum Outcome {
    Stored(Box<IndexEntry>, Staged),
    Vanished,
    /// Size or times changed during every try.
    Unstable,
    /// An error reading the source (not the repository): reported, not fatal.
    Unreadable(String),
}

struct Job {
    path: PathBuf,
    rel: String,
    reply: SyncSender<Result<Outcome>>,
}

enum Slot {
    Ready(IndexEntry),
    /// Not recorded (a link whose target could not be read).
    Skip,
    Pending(String, Receiver<Result<Outcome>>),
}

/// Captures the tree under `source` into `store`, writing its index to
/// `index_path`. `source` may be the live attachment directory or, later, a
/// snapshot of it: only relative paths are recorded.
pub fn capture(
    source: &Path,
    store: &ObjectStore,
    index_path: &Path,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<CaptureStats> {
    let started = Instant::now();
    let mut stats = CaptureStats::default();
    let mut index = IndexWriter::create(index_path)?;
    if !source.is_dir() {
        stats.source_missing = true;
        index.finish()?;
        return Ok(stats);
    }
    let walker = Walker::with_follow(source, opts.follow_dirs)?;
    // An unreadable previous index only costs re-reading every file.
    let rows = opts.previous_index.as_deref().and_then(|path| {
        read_index(path)
            .inspect_err(|e| tracing::warn!("not reusing checksums of the previous set: {e:#}"))
            .ok()
    });
    let previous = match rows {
        Some(rows) => PrevIndex::new(rows),
        None => PrevIndex::none(),
    };
    let (job_tx, job_rx) = sync_channel::<Job>(WINDOW);
    let job_rx = Mutex::new(job_rx);
    progress.start("attachments", None);
    let result = thread::scope(|scope| {
        for _ in 0..opts.workers.max(1) {
            scope.spawn(|| worker(store, &job_rx));
        }
        let mut run = Run {
            store,
            stats: &mut stats,
            index: &mut index,
            window: VecDeque::with_capacity(WINDOW + 1),
            batch: Vec::new(),
            batch_bytes: 0,
            progress,
            follow_dirs: opts.follow_dirs,
            cancel: &opts.cancel,
        };
        // job_tx moves in, so the workers see the channel close however this ends.
        run.walk(walker, previous, job_tx)
    });
    progress.finish();
    result?;
    index.finish()?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

struct Run<'a> {
    store: &'a ObjectStore,
    stats: &'a mut CaptureStats,
    index: &'a mut IndexWriter,
    window: VecDeque<Slot>,
    batch: Vec<Staged>,
    batch_bytes: u64,
    progress: &'a dyn Progress,
    follow_dirs: bool,
    cancel: &'a Cancel,
}

impl Run<'_> {
    fn walk<I>(
        &mut self,
        walker: Walker,
        mut previous: PrevIndex<I>,
        jobs: SyncSender<Job>,
    ) -> Result<()>
    where
        I: Iterator<Item = Result<IndexEntry>>,
    {
        let root = walker.root().to_path_buf();
        for walked in walker {
            crate::signals::check()?;
            self.cancel.check()?;
            match walked? {
                Walked::Vanished { rel } => self.vanished(rel),
                Walked::Skipped { rel, reason } => {
                    note(&mut self.stats.unreadable, format!("{rel}: {reason}"))
                }
                Walked::Entry { rel, meta } => {
                    let slot = self.classify(&root, rel, &meta, &mut previous, &jobs)?;
                    self.window.push_back(slot);
                }
                Walked::Followed {
                    rel,
                    meta,
                    target,
                    other_device,
                } => {
                    let note_text = format!("{rel} -> {target}");
                    if other_device {
                        note(&mut self.stats.followed_other_device, note_text.clone());
                    }
                    note(&mut self.stats.followed, note_text);
                    self.stats.followed_dirs += 1;
                    let mut entry = IndexEntry::from_meta(rel, &meta);
                    entry.target = Some(target);
                    self.window.push_back(Slot::Ready(entry));
                }
                Walked::NotFollowed {
                    rel,
                    meta,
                    target,
                    reason,
                } => {
                    tracing::warn!("{rel} -> {target}: not followed: {reason}");
                    note(
                        &mut self.stats.not_followed,
                        format!("{rel} -> {target}: {reason}"),
                    );
                    let mut entry = IndexEntry::from_meta(rel, &meta);
                    entry.target = Some(target);
                    self.window.push_back(Slot::Ready(entry));
                }
            }
            while self.window.len() > WINDOW {
                self.drain_one()?;
            }
        }
        drop(jobs);
        while !self.window.is_empty() {
            self.drain_one()?;
        }
        if let Some(problem) = previous.problem {
            tracing::warn!("the previous set's index could not be read to the end: {problem}");
        }
        self.commit_batch()
    }

    /// Decides what one walked entry needs: nothing more, or a worker.
    fn classify<I>(
        &mut self,
        root: &Path,
        rel: String,
        meta: &Metadata,
        previous: &mut PrevIndex<I>,
        jobs: &SyncSender<Job>,
    ) -> Result<Slot>
    where
        I: Iterator<Item = Result<IndexEntry>>,
    {
        let mut entry = IndexEntry::from_meta(rel, meta);
        match entry.kind {
            EntryKind::File => {
                if let Some(before) = previous.find(&entry.path)
                    && entry.unchanged_since(&before)
                    && let Some(sha) = before.sha256.clone()
                    && reuse(self.store, &mut entry, sha, &before, self.stats)
                {
                    return Ok(Slot::Ready(entry));
                }
                let (reply, rx) = sync_channel(1);
                jobs.send(Job {
                    path: root.join(&entry.path),
                    rel: entry.path.clone(),
                    reply,
                })
                .map_err(|_| anyhow!("the attachment readers stopped early"))?;
                Ok(Slot::Pending(entry.path, rx))
            }
            EntryKind::Symlink => {
                let path = root.join(&entry.path);
                match std::fs::read_link(&path) {
                    Ok(target) => {
                        let target = target.to_string_lossy().into_owned();
                        let what = match std::fs::metadata(&path) {
                            Err(_) => " (dangling)",
                            // Following is on: only links into the tree stay links.
                            Ok(m) if m.is_dir() && self.follow_dirs => {
                                " (a directory in the tree, captured where it is)"
                            }
                            Ok(m) if m.is_dir() => {
                                " (a directory, not followed: follow_symlinks = \"none\")"
                            }
                            Ok(_) => "",
                        };
                        note(
                            &mut self.stats.link_paths,
                            format!("{} -> {target}{what}", entry.path),
                        );
                        entry.target = Some(target);
                    }
                    Err(e) => {
                        note(&mut self.stats.unreadable, format!("{}: {e}", entry.path));
                        return Ok(Slot::Skip);
                    }
                }
                Ok(Slot::Ready(entry))
            }
            EntryKind::Other => {
                let kind = special_kind(meta);
                tracing::warn!("{}: {kind}, recorded but not read", entry.path);
                note(
                    &mut self.stats.special_paths,
                    format!("{}: {kind}", entry.path),
                );
                Ok(Slot::Ready(entry))
            }
            EntryKind::Dir => Ok(Slot::Ready(entry)),
        }
    }

    /// Writes the oldest entry of the window to the index, waiting for its
    /// worker if needed.
    fn drain_one(&mut self) -> Result<()> {
        let Some(slot) = self.window.pop_front() else {
            return Ok(());
        };
        let entry = match slot {
            Slot::Ready(entry) => entry,
            Slot::Skip => return Ok(()),
            Slot::Pending(rel, rx) => {
                let outcome = rx
                    .recv()
                    .map_err(|_| anyhow!("an attachment reader stopped while reading {rel}"))??;
                match outcome {
                    Outcome::Stored(mut entry, staged) => {
                        self.stats.read_files += 1;
                        self.stats.read_bytes += entry.size;
                        if let Some(kept) = self.keep_stored_copy(&staged)? {
                            // A good copy stored differently: this set names it.
                            entry.stored = Some(kept.0);
                            entry.stored_bytes = Some(kept.1);
                        } else {
                            self.batch_bytes += staged.info.stored_bytes;
                            self.batch.push(staged);
                        }
                        if self.batch.len() >= BATCH_OBJECTS || self.batch_bytes >= BATCH_BYTES {
                            self.commit_batch()?;
                        }
                        *entry
                    }
                    Outcome::Vanished => {
                        self.vanished(rel);
                        return Ok(());
                    }
                    Outcome::Unstable => {
                        tracing::warn!("{rel} changed on every read; it is not in this set");
                        note(&mut self.stats.unstable_paths, rel);
                        return Ok(());
                    }
                    Outcome::Unreadable(why) => {
                        tracing::warn!("{why}");
                        note(&mut self.stats.unreadable, why);
                        return Ok(());
                    }
                }
            }
        };
        match entry.kind {
            EntryKind::File => {
                self.stats.files += 1;
                self.stats.bytes += entry.size;
                self.progress.inc(entry.size);
            }
            EntryKind::Dir => self.stats.dirs += 1,
            EntryKind::Symlink => self.stats.symlinks += 1,
            EntryKind::Other => self.stats.other += 1,
        }
        self.index.write(&entry)
    }

    /// A freshly read file whose object is already stored: a copy of the
    /// same encoding and size is simply replaced by the fresh (hashed) one
    /// at commit. A copy that differs (other encoding or size: another zstd
    /// version, or damage) is hashed: a good one is kept and returned, a
    /// corrupt one is moved to `objects/.corrupt/` and the fresh one
    /// takes its place.
    fn keep_stored_copy(&mut self, staged: &Staged) -> Result<Option<(Encoding, u64)>> {
        let info = &staged.info;
        let Some((encoding, bytes)) = self.store.stat(&info.sha256, info.encoding) else {
            return Ok(None);
        };
        if encoding == info.encoding && bytes == info.stored_bytes {
            return Ok(None);
        }
        // A raw object's size is its content's: a different one is damage.
        let good = encoding != Encoding::Raw
            && matches!(self.store.check(&info.sha256, encoding), Ok(Some(_)));
        if good {
            return Ok(Some((encoding, bytes)));
        }
        let moved = self.store.quarantine(&info.sha256, encoding)?;
        tracing::warn!(
            "object {} was corrupt; moved to {} and written again from the live store",
            info.sha256,
            moved.display()
        );
        note(&mut self.stats.corrupt_objects, info.sha256.clone());
        Ok(None)
    }

    fn vanished(&mut self, rel: String) {
        self.stats.vanished += 1;
        note(&mut self.stats.vanished_paths, rel);
    }

    fn commit_batch(&mut self) -> Result<()> {
        self.batch_bytes = 0;
        commit_counted(self.store, std::mem::take(&mut self.batch), self.stats)
    }
}

/// Commits a batch of staged objects, counting the new ones.
pub(crate) fn commit_counted(
    store: &ObjectStore,
    batch: Vec<Staged>,
    stats: &mut CaptureStats,
) -> Result<()> {
    for committed in store.commit(batch)? {
        if committed.new {
            stats.new_objects += 1;
            stats.written_bytes += committed.written_bytes;
        }
    }
    Ok(())
}

fn worker(store: &ObjectStore, jobs: &Mutex<Receiver<Job>>) {
    serve(jobs, |job: Job, buf, packer| {
        let outcome = read_file(store, &job.path, &job.rel, buf, packer);
        // The main loop may have given up; then nobody needs the answer.
        let _ = job.reply.send(outcome);
    });
}

/// A reader thread's loop, shared with the S3 capture: takes jobs until
/// the channel closes, each with the thread's buffer and packer (a packer
/// that could not be made fails every job with its error).
pub(crate) fn serve<J: JobReply>(
    jobs: &Mutex<Receiver<J>>,
    mut handle: impl FnMut(J, &mut [u8], &mut Packer),
) {
    let mut buf = vec![0u8; BUF];
    let mut packer = Packer::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        match &mut packer {
            Ok(packer) => handle(job, &mut buf, packer),
            Err(e) => job.fail(anyhow!("{e:#}")),
        }
    }
}

/// A job whose answer can be an error.
pub(crate) trait JobReply {
    fn fail(self, e: anyhow::Error);
}

impl JobReply for Job {
    fn fail(self, e: anyhow::Error) {
        let _ = self.reply.send(Err(e));
    }
}

/// Reads one file into a staged object, trying again when it changes under
/// the reader, so that no object is recorded under a checksum the file
/// never had. Errors are the repository's; source trouble is an [`Outcome`].
fn read_file(
    store: &ObjectStore,
    path: &Path,
    rel: &str,
    buf: &mut [u8],
    packer: &mut Packer,
) -> Result<Outcome> {
    for _ in 0..TRIES {
        // Non-blocking, so a fifo swapped in after the walk cannot hang the reader.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Vanished),
            Err(e) => return Ok(Outcome::Unreadable(format!("while opening {rel}: {e}"))),
        };
        let before = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(Outcome::Unstable),
            Err(e) => return Ok(Outcome::Unreadable(format!("while examining {rel}: {e}"))),
        };
        // Kopano's own .gz files are stored as they are.
        let raw = rel.ends_with(".gz");
        let staged = match stream_into(store, &mut file, buf, packer, raw) {
            Ok(staged) => staged,
            Err(StreamError::Source(e)) => {
                return Ok(Outcome::Unreadable(format!("while reading {rel}: {e}")));
            }
            Err(StreamError::Store(e)) => return Err(e),
        };
        let after = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Ok(Outcome::Unreadable(format!("while examining {rel}: {e}"))),
        };
        if staged.info.size == after.size() && same_stamps(&before, &after) {
            let mut entry = IndexEntry::from_meta(rel.to_string(), &after);
            entry.sha256 = Some(staged.info.sha256.clone());
            entry.stored = Some(staged.info.encoding);
            entry.stored_bytes = Some(staged.info.stored_bytes);
            return Ok(Outcome::Stored(Box::new(entry), staged));
        }
        // Dropping `staged` removes its temporary file.
    }
    Ok(Outcome::Unstable)
}

/// Why [`stream_into`] stopped.
pub(crate) enum StreamError {
    /// Reading the source failed.
    Source(io::Error),
    /// Writing to the repository failed.
    Store(anyhow::Error),
}

/// Streams `source` into a staged object, hashed on the way: its first
/// bytes decide whether it is compressed (never when `raw`).
pub(crate) fn stream_into(
    store: &ObjectStore,
    source: &mut dyn Read,
    buf: &mut [u8],
    packer: &mut Packer,
    raw: bool,
) -> Result<Staged, StreamError> {
    let sample = SAMPLE.min(buf.len());
    let mut head = 0;
    while head < sample {
        match source.read(&mut buf[head..sample]) {
            Ok(0) => break,
            Ok(n) => head += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Source(e)),
        }
    }
    let encoding = if raw {
        Encoding::Raw
    } else {
        packer.choose(&buf[..head])
    };
    let store_error =
        |e: anyhow::Error| StreamError::Store(e.context("while writing to the repository"));
    let mut object = store.writer(encoding, packer).map_err(store_error)?;
    object
        .write_all(&buf[..head])
        .map_err(|e| store_error(e.into()))?;
    loop {
        let n = match source.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Source(e)),
        };
        object
            .write_all(&buf[..n])
            .map_err(|e| store_error(e.into()))?;
    }
    object.finish().map_err(StreamError::Store)
}

/// What a special file is, in words.
fn special_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

/// Takes the previous set's checksum `sha` for an unchanged `entry`, but
/// only while the store still holds its object at the recorded size (a
/// `stat`); false (and counted as refused) when it must be read again.
pub(crate) fn reuse(
    store: &ObjectStore,
    entry: &mut IndexEntry,
    sha: String,
    before: &IndexEntry,
    stats: &mut CaptureStats,
) -> bool {
    match reusable(store, &sha, before) {
        Some((encoding, stored_bytes)) => {
            entry.sha256 = Some(sha);
            entry.stored = Some(encoding);
            entry.stored_bytes = Some(stored_bytes);
            stats.reused += 1;
            stats.reused_bytes += entry.size;
            true
        }
        None => {
            stats.reuse_refused += 1;
            false
        }
    }
}

/// The stored copy of an unchanged file's object, when it exists with the
/// stored size the previous set records (older sets record none for
/// zstd objects: then existence is all a `stat` can tell).
pub(crate) fn reusable(
    store: &ObjectStore,
    sha: &str,
    before: &IndexEntry,
) -> Option<(Encoding, u64)> {
    let recorded = before.stored.unwrap_or(Encoding::Raw);
    let (encoding, bytes) = store.stat(sha, recorded)?;
    match before.expected_stored_bytes() {
        Some(want) if encoding != recorded || bytes != want => None,
        _ => Some((encoding, bytes)),
    }
}

/// Size and change times unchanged: nobody wrote to the file meanwhile.
fn same_stamps(a: &Metadata, b: &Metadata) -> bool {
    a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
