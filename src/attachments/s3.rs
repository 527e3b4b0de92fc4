//! Capture of an `s3` attachment store: the bucket is listed under the
//! key prefix (both forms, with and without the leading `/`), or read as
//! the versioned view at the dump's transaction start; each object is
//! streamed into the object store by a few downloaders, hashed on the way,
//! and the index is written in key order. An object whose key, size and
//! ETag are those of the previous set is not downloaded again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use backon::{BlockingRetryable, ExponentialBuilder};
use chrono::{DateTime, Utc};

// The window (bounding memory) and commit batches of the file capture.
use super::capture::{
    BATCH_BYTES, BATCH_OBJECTS, JobReply, StreamError, WINDOW, commit_counted, reuse, serve,
    stream_into,
};
use super::index::{EntryKind, IndexEntry, IndexWriter, PrevIndex, read_index};
use super::{CaptureStats, note};
use crate::progress::Progress;
use crate::repo::objects::{ObjectStore, Packer, Staged};
use crate::s3::{Client, ObjectInfo, Versioning};

/// Where to read and how.
#[derive(Debug, Clone)]
pub struct S3CaptureOptions {
    pub bucket: String,
    /// `attachment_path` + `/`, as configured.
    pub prefix: String,
    /// Objects downloaded at once.
    pub downloads: usize,
    /// The previous complete set's index; `None` downloads every object.
    pub previous_index: Option<PathBuf>,
    /// The dump's transaction start: with versioning on, the objects are
    /// read as they were then.
    pub view_at: Option<DateTime<Utc>>,
}

/// What the capture found out besides its stats.
#[derive(Debug, Clone, Default)]
pub struct S3Capture {
    pub stats: CaptureStats,
    /// Whether the versioned view at `view_at` was read.
    pub versioned: bool,
}

/// The two prefixes to list: as configured, and without its leading `/`
/// (servers that strip it list the bare key under both; each listing keeps
/// only keys in its own form, so nothing is counted twice, and since every
/// key of the first form begins with `/`, the index stays in byte order).
fn prefixes(prefix: &str) -> Vec<String> {
    let mut all = vec![prefix.to_owned()];
    if let Some(bare) = prefix.strip_prefix('/') {
        all.push(bare.to_owned());
    }
    all
}

enum Outcome {
    Stored(IndexEntry, Staged),
    /// Deleted between the listing and the download.
    Vanished,
    /// The body was not as long as listed: recorded without a checksum.
    Short(IndexEntry, u64),
}

struct Job {
    object: ObjectInfo,
    reply: SyncSender<Result<Outcome>>,
}

enum Slot {
    Ready(IndexEntry),
    Pending(String, Receiver<Result<Outcome>>),
}

/// Captures the bucket into `store`, writing the index to `index_path`.
pub fn capture_s3(
    client: &Client,
    store: &ObjectStore,
    index_path: &Path,
    opts: &S3CaptureOptions,
    progress: &dyn Progress,
) -> Result<S3Capture> {
    let started = Instant::now();
    let mut stats = CaptureStats::default();
    let mut index = IndexWriter::create(index_path)?;
    let versioned = match opts.view_at {
        Some(_) => client.versioning(&opts.bucket)? != Versioning::Off,
        None => false,
    };
    // The view is the moment on the server's clock: LastModified is its.
    let mut opts = opts.clone();
    if versioned && let Some(at) = opts.view_at {
        // The Date header is to the second: less than that is no skew.
        let offset = client.clock_offset(&opts.bucket)?.unwrap_or_default();
        if offset.num_milliseconds().abs() > 1000 {
            tracing::warn!(
                "the S3 server's clock is {}s off ours; the versioned view allows for it",
                offset.num_seconds()
            );
            opts.view_at = Some(at + offset);
        }
    }
    let opts = &opts;
    let rows = opts.previous_index.as_deref().and_then(|path| {
        read_index(path)
            .inspect_err(|e| tracing::warn!("not reusing checksums of the previous set: {e:#}"))
            .ok()
    });
    let mut previous = match rows {
        Some(rows) => PrevIndex::new(rows),
        None => PrevIndex::none(),
    };
    let (job_tx, job_rx) = sync_channel::<Job>(WINDOW);
    let job_rx = Mutex::new(job_rx);
    progress.start("attachments", None);
    let result = thread::scope(|scope| {
        for _ in 0..opts.downloads.max(1) {
            scope.spawn(|| downloader(client, &opts.bucket, store, &job_rx));
        }
        let mut run = Run {
            store,
            stats: &mut stats,
            index: &mut index,
            window: VecDeque::with_capacity(WINDOW + 1),
            batch: Vec::new(),
            batch_bytes: 0,
            progress,
            jobs: job_tx,
        };
        let listed = run.list(client, opts, versioned, &mut previous);
        // Close the channel so the downloaders end however this went.
        let Run { jobs, .. } = run;
        drop(jobs);
        listed
    });
    progress.finish();
    result?;
    index.finish()?;
    if let Some(problem) = previous.problem {
        tracing::warn!("the previous set's index could not be read to the end: {problem}");
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(S3Capture { stats, versioned })
}

struct Run<'a> {
    store: &'a ObjectStore,
    stats: &'a mut CaptureStats,
    index: &'a mut IndexWriter,
    window: VecDeque<Slot>,
    batch: Vec<Staged>,
    batch_bytes: u64,
    progress: &'a dyn Progress,
    jobs: SyncSender<Job>,
}

impl Run<'_> {
    fn list<I>(
        &mut self,
        client: &Client,
        opts: &S3CaptureOptions,
        versioned: bool,
        previous: &mut PrevIndex<I>,
    ) -> Result<()>
    where
        I: Iterator<Item = Result<IndexEntry>>,
    {
        for prefix in prefixes(&opts.prefix) {
            let mut each = |object: ObjectInfo| -> Result<()> {
                crate::signals::check()?;
                if !object.key.starts_with(&prefix) {
                    return Ok(());
                }
                let slot = self.classify(object, previous)?;
                self.window.push_back(slot);
                while self.window.len() > WINDOW {
                    self.drain_one()?;
                }
                Ok(())
            };
            match (versioned, opts.view_at) {
                (true, Some(at)) => view_at(client, &opts.bucket, &prefix, at, &mut each)?,
                _ => client.list_v2(&opts.bucket, &prefix, &mut each)?,
            }
        }
        while !self.window.is_empty() {
            self.drain_one()?;
        }
        self.commit_batch()
    }

    /// Reuses the previous set's checksum when key, size and ETag are
    /// unchanged and the object is still stored; else a download.
    fn classify<I>(&mut self, object: ObjectInfo, previous: &mut PrevIndex<I>) -> Result<Slot>
    where
        I: Iterator<Item = Result<IndexEntry>>,
    {
        let mut entry = entry_of(&object);
        if let Some(before) = previous.find_by(&object.key, |a, b| a.as_bytes().cmp(b.as_bytes()))
            && before.kind == EntryKind::File
            && before.size == object.size
            && before.etag.is_some()
            && before.etag == object.etag
            && before.version_id == object.version_id
            && let Some(sha) = before.sha256.clone()
            && reuse(self.store, &mut entry, sha, &before, self.stats)
        {
            return Ok(Slot::Ready(entry));
        }
        let (reply, rx) = sync_channel(1);
        let key = object.key.clone();
        self.jobs
            .send(Job { object, reply })
            .map_err(|_| anyhow!("the S3 downloaders stopped early"))?;
        Ok(Slot::Pending(key, rx))
    }

    fn drain_one(&mut self) -> Result<()> {
        let Some(slot) = self.window.pop_front() else {
            return Ok(());
        };
        let entry = match slot {
            Slot::Ready(entry) => entry,
            Slot::Pending(key, rx) => {
                let outcome = rx
                    .recv()
                    .map_err(|_| anyhow!("an S3 downloader stopped while reading {key:?}"))??;
                match outcome {
                    Outcome::Stored(entry, staged) => {
                        self.stats.read_files += 1;
                        self.stats.read_bytes += entry.size;
                        self.batch_bytes += staged.info.stored_bytes;
                        self.batch.push(staged);
                        if self.batch.len() >= BATCH_OBJECTS || self.batch_bytes >= BATCH_BYTES {
                            self.commit_batch()?;
                        }
                        entry
                    }
                    Outcome::Vanished => {
                        self.stats.vanished += 1;
                        note(&mut self.stats.vanished_paths, key);
                        return Ok(());
                    }
                    Outcome::Short(entry, got) => {
                        let why = format!(
                            "{key}: the body had {got} bytes, the listing says {}",
                            entry.size
                        );
                        tracing::warn!("{why}");
                        note(&mut self.stats.unreadable, why);
                        entry
                    }
                }
            }
        };
        self.stats.files += 1;
        self.stats.bytes += entry.size;
        self.progress.inc(entry.size);
        self.index.write(&entry)
    }

    fn commit_batch(&mut self) -> Result<()> {
        self.batch_bytes = 0;
        commit_counted(self.store, std::mem::take(&mut self.batch), self.stats)
    }
}

/// The index entry of a listed object, without content facts.
fn entry_of(object: &ObjectInfo) -> IndexEntry {
    let (mtime, mtime_nsec) = object
        .last_modified
        .map_or((0, 0), |t| (t.timestamp(), t.timestamp_subsec_nanos()));
    IndexEntry {
        path: object.key.clone(),
        kind: EntryKind::File,
        size: object.size,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime,
        mtime_nsec,
        sha256: None,
        stored: None,
        stored_bytes: None,
        target: None,
        etag: object.etag.clone(),
        version_id: object.version_id.clone(),
    }
}

/// The bucket under `prefix` as it was at `at`: per key, the newest
/// version or delete marker not newer than `at`; a key whose choice is a
/// delete marker, or that has no version that old, did not exist then.
/// Versions of one key come together in the listing, so one key is held
/// at a time.
fn view_at(
    client: &Client,
    bucket: &str,
    prefix: &str,
    at: DateTime<Utc>,
    each: &mut dyn FnMut(ObjectInfo) -> Result<()>,
) -> Result<()> {
    let mut current: Option<Group> = None;
    let emit = |group: Option<Group>, each: &mut dyn FnMut(ObjectInfo) -> Result<()>| match group
        .and_then(|g| g.best)
    {
        Some(chosen) if !chosen.delete_marker => each(chosen.object),
        _ => Ok(()),
    };
    client.list_versions(bucket, prefix, &mut |v| {
        let Some(time) = v.object.last_modified else {
            return Ok(());
        };
        if current.as_ref().is_some_and(|g| g.key != v.object.key) {
            emit(current.take(), each)?;
        }
        let group = current.get_or_insert_with(|| Group {
            key: v.object.key.clone(),
            best: None,
        });
        if time <= at && group.best.as_ref().is_none_or(|b| time > b.time) {
            group.best = Some(Chosen {
                time,
                delete_marker: v.delete_marker,
                object: v.object,
            });
        }
        Ok(())
    })?;
    emit(current.take(), each)
}

/// The versions of one key seen so far, and the one chosen for the view.
struct Group {
    key: String,
    best: Option<Chosen>,
}

struct Chosen {
    time: DateTime<Utc>,
    delete_marker: bool,
    object: ObjectInfo,
}

fn downloader(client: &Client, bucket: &str, store: &ObjectStore, jobs: &Mutex<Receiver<Job>>) {
    serve(jobs, |job: Job, buf, packer| {
        let outcome = download(client, bucket, store, &job.object, buf, packer);
        let _ = job.reply.send(outcome);
    });
}

impl JobReply for Job {
    fn fail(self, e: anyhow::Error) {
        let _ = self.reply.send(Err(e));
    }
}

/// Why one try of a download failed.
enum Failed {
    /// The body broke off: the object is started again.
    Body(anyhow::Error),
    /// The request failed after the client's own retries, or the repository.
    Final(anyhow::Error),
}

/// Downloads one object into a staged object, starting it again (with
/// backoff) when its body breaks off; after the last try the error names
/// the key.
fn download(
    client: &Client,
    bucket: &str,
    store: &ObjectStore,
    object: &ObjectInfo,
    buf: &mut [u8],
    packer: &mut Packer,
) -> Result<Outcome> {
    let retries = client.config().retries;
    let mut tries = 0;
    let attempt = || {
        tries += 1;
        download_once(client, bucket, store, object, buf, packer)
    };
    let result = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(retries)
                .with_jitter(),
        )
        .when(|e| matches!(e, Failed::Body(_)))
        .call();
    match result {
        Ok(outcome) => Ok(outcome),
        Err(Failed::Final(e)) => Err(e),
        Err(Failed::Body(e)) => Err(e.context(format!(
            "S3 GET of key {:?} in bucket {bucket:?} at {} failed after {tries} tries",
            object.key,
            client.endpoint()
        ))),
    }
}

fn download_once(
    client: &Client,
    bucket: &str,
    store: &ObjectStore,
    object: &ObjectInfo,
    buf: &mut [u8],
    packer: &mut Packer,
) -> Result<Outcome, Failed> {
    let key = &object.key;
    let mut body = match client.get(bucket, key, object.version_id.as_deref()) {
        Ok(body) => body,
        Err(e) if e.is_not_found() => return Ok(Outcome::Vanished),
        Err(e) => return Err(Failed::Final(e.into())),
    };
    let staged = match stream_into(store, &mut body.reader, buf, packer, false) {
        Ok(staged) => staged,
        Err(StreamError::Source(e)) => {
            let e = anyhow::Error::new(e).context(format!("while reading the body of {key:?}"));
            return Err(Failed::Body(e));
        }
        Err(StreamError::Store(e)) => return Err(Failed::Final(e)),
    };
    let mut entry = entry_of(object);
    if staged.info.size != object.size {
        return Ok(Outcome::Short(entry, staged.info.size));
    }
    entry.sha256 = Some(staged.info.sha256.clone());
    entry.stored = Some(staged.info.encoding);
    entry.stored_bytes = Some(staged.info.stored_bytes);
    Ok(Outcome::Stored(entry, staged))
}

/// Context for errors of the whole capture.
pub fn describe(opts: &S3CaptureOptions, client: &Client) -> String {
    format!(
        "while capturing bucket {:?} under {:?} at {}",
        opts.bucket,
        opts.prefix,
        client.endpoint()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_key_forms_are_listed_slash_first() {
        assert_eq!(prefixes("/var/att/"), ["/var/att/", "var/att/"]);
        assert_eq!(prefixes("att/"), ["att/"]);
    }
}
