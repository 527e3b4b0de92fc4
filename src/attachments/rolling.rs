//! Rolling verification: each backup re-reads the share of the stored
//! objects its set references whose hash falls in this backup's slice, so
//! that every object is re-read at least once per `[verify] rolling_days`
//! backups although unchanged files are reused without reading. A corrupt
//! object is moved to `objects/.corrupt/` and written again from the live
//! store (the tree, or the bucket of an s3 store) when the data there
//! still hashes to the object's name.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::index::{EntryKind, read_index};
use super::note;
use crate::progress::Progress;
use crate::repo::objects::{Encoding, ObjectStore, Packer};

/// Which share of the objects one backup re-reads.
#[derive(Debug, Clone, Copy)]
pub struct RollingOptions {
    /// `[verify] rolling_days`: the number of slices.
    pub days: u32,
    /// This backup's number; it picks slice `counter % days`.
    pub counter: u64,
}

/// What rolling verification re-read and found (manifest and `--json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollingStats {
    pub counter: u64,
    pub rolling_days: u32,
    /// The slice re-read, `counter % rolling_days`.
    pub slice: u32,
    /// Objects re-read and hashed, and their stored bytes.
    pub objects: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Objects found corrupt (or missing) and moved aside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt: Vec<String>,
    /// Of those, objects written again from the live store.
    pub rewritten: u64,
    /// Paths whose corrupt object could not be written again: the live
    /// file is gone or no longer holds that data. The set is incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
}

/// The slice an object belongs to: its hash's first 64 bits modulo `days`.
pub fn slice_of(sha256: &str, days: u32) -> u32 {
    let head = sha256
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    (head.unwrap_or(0) % u64::from(days.max(1))) as u32
}

struct Job {
    sha: String,
    encoding: Encoding,
    rel: String,
    /// An S3 object's version, as captured.
    version: Option<String>,
}

/// Where a corrupt object's data is read again from: the tree the index
/// was captured from (the snapshot, while it is still there), or the
/// bucket of an s3 store.
pub enum Source<'a> {
    Tree(&'a Path),
    Bucket {
        client: &'a crate::s3::Client,
        bucket: &'a str,
    },
}

impl Source<'_> {
    /// The data of index entry `rel` (a path, or a key), and what to call it.
    fn open(&self, rel: &str, version: Option<&str>) -> Result<(Box<dyn Read>, String), String> {
        match self {
            Source::Tree(root) => {
                let path: PathBuf = root.join(rel);
                let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((Box::new(file), path.display().to_string()))
            }
            Source::Bucket { client, bucket } => {
                let body = client
                    .get(bucket, rel, version)
                    .map_err(|e| e.to_string())?;
                Ok((body.reader, format!("key {rel:?}")))
            }
        }
    }
}

enum Verdict {
    Good(u64),
    Rewritten(u64),
    Lost(String),
}

/// Re-reads the objects of this backup's slice named by the index at
/// `index_path`; `source` is where the index was captured from.
pub fn run(
    store: &ObjectStore,
    index_path: &Path,
    source: &Source<'_>,
    opts: &RollingOptions,
    progress: &dyn Progress,
) -> Result<RollingStats> {
    let started = Instant::now();
    let days = opts.days.max(1);
    let slice = (opts.counter % u64::from(days)) as u32;
    let mut stats = RollingStats {
        counter: opts.counter,
        rolling_days: days,
        slice,
        ..RollingStats::default()
    };
    let stats_lock = Mutex::new(&mut stats);
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = sync_channel::<Job>(256);
    let rx = Mutex::new(rx);
    progress.start("rolling verification", None);
    let walked = thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut packer = None;
                loop {
                    let next = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    let verdict = reread(store, source, &job, &mut packer);
                    let mut stats = stats_lock.lock().unwrap_or_else(|p| p.into_inner());
                    match verdict {
                        Verdict::Good(bytes) => {
                            stats.objects += 1;
                            stats.bytes += bytes;
                            progress.inc(bytes);
                        }
                        Verdict::Rewritten(bytes) => {
                            stats.objects += 1;
                            stats.bytes += bytes;
                            stats.rewritten += 1;
                            note(&mut stats.corrupt, job.sha);
                        }
                        Verdict::Lost(why) => {
                            stats.objects += 1;
                            note(&mut stats.corrupt, job.sha);
                            tracing::warn!("{why}");
                            note(&mut stats.lost, job.rel);
                        }
                    }
                }
            });
        }
        // Each object once, though several paths may share it.
        let mut seen = HashSet::new();
        for entry in read_index(index_path)? {
            crate::signals::check()?;
            let entry = entry?;
            if entry.kind != EntryKind::File {
                continue;
            }
            let Some(sha) = entry.sha256 else { continue };
            if slice_of(&sha, days) != slice || !seen.insert(sha.clone()) {
                continue;
            }
            let job = Job {
                sha,
                encoding: entry.stored.unwrap_or(Encoding::Raw),
                rel: entry.path,
                version: entry.version_id,
            };
            if tx.send(job).is_err() {
                break;
            }
        }
        drop(tx);
        Ok(())
    });
    progress.finish();
    walked?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// One object: hashed; if corrupt, moved aside and written again from the
/// live file when that still holds the same content.
fn reread(
    store: &ObjectStore,
    source: &Source<'_>,
    job: &Job,
    packer: &mut Option<Packer>,
) -> Verdict {
    let encoding = store
        .stat(&job.sha, job.encoding)
        .map_or(job.encoding, |(e, _)| e);
    let bytes = store.stat(&job.sha, encoding).map_or(0, |(_, b)| b);
    match store.check(&job.sha, encoding) {
        Ok(Some(_)) => return Verdict::Good(bytes),
        Ok(None) => match store.quarantine(&job.sha, encoding) {
            Ok(to) => tracing::warn!(
                "object {} (of {}) is corrupt: moved to {}",
                job.sha,
                job.rel,
                to.display()
            ),
            Err(e) => {
                return Verdict::Lost(format!(
                    "object {} (of {}) is corrupt and could not be moved aside: {e:#}",
                    job.sha, job.rel
                ));
            }
        },
        // Missing: nothing to move aside, but it can be written again.
        Err(_) => {}
    }
    match rewrite(store, source, job, packer) {
        Ok(bytes) => Verdict::Rewritten(bytes),
        Err(why) => Verdict::Lost(format!(
            "object {} of {} is corrupt and the live store no longer holds its data: {why}",
            job.sha, job.rel
        )),
    }
}

/// Stores the live data again, if it still hashes to the object's name.
fn rewrite(
    store: &ObjectStore,
    source: &Source<'_>,
    job: &Job,
    packer: &mut Option<Packer>,
) -> std::result::Result<u64, String> {
    let packer = match packer {
        Some(p) => p,
        None => packer.insert(Packer::new().map_err(|e| format!("{e:#}"))?),
    };
    let (mut data, name) = source.open(&job.rel, job.version.as_deref())?;
    let mut writer = store
        .writer(job.encoding, packer)
        .map_err(|e| format!("{e:#}"))?;
    io::copy(&mut data, &mut writer).map_err(|e| format!("{name}: {e}"))?;
    let staged = writer.finish().map_err(|e| format!("{e:#}"))?;
    if staged.info.sha256 != job.sha {
        return Err(format!("{name} now hashes to {}", staged.info.sha256));
    }
    let bytes = staged.info.stored_bytes;
    store.commit(vec![staged]).map_err(|e| format!("{e:#}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_falls_in_exactly_one_slice_of_each_round() {
        let shas: Vec<String> = (0u32..500)
            .map(|n| crate::repo::digest::sha256_hex(&n.to_le_bytes()))
            .collect();
        for days in [1, 7, 30] {
            let mut seen = vec![0u32; shas.len()];
            for counter in 0..days {
                for (n, sha) in shas.iter().enumerate() {
                    if slice_of(sha, days) == counter {
                        seen[n] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "days {days}");
        }
    }
}
