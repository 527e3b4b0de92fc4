//! Restoring an s3 set into a bucket: every object PUT back under its key,
//! streamed from the repository with its checksum verified on the way, a
//! few at a time. With `--force`, objects the set does not hold are moved
//! (copied, then deleted) under a `kcbackup-quarantine-<time>/` prefix,
//! never deleted outright.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::checks::RestoredObjects;
use super::s3::Checked;
use crate::attachments::{IndexEntry, read_index};
use crate::error::{Damaged, config_error};
use crate::repo::manifest::S3Source;
use crate::repo::objects::ObjectStore;
use crate::s3::{Client, S3Config};

/// Uploads (and quarantine moves) at once: a few, as for capture.
pub const PARALLEL: usize = 4;

/// The client that restores (or drills) an s3 set: the set's endpoint,
/// region and URL style, or `endpoint` instead (then the configured region
/// and style), with the credentials backup uses (server.cfg or `[s3]`).
pub fn client_for(
    settings: &crate::settings::Settings,
    source: &S3Source,
    endpoint: Option<&str>,
) -> Result<Client> {
    let s = &settings.s3;
    if s.access_key_id.is_empty() {
        return config_error(format!(
            "restoring an s3 set needs the access key id (attachment_s3_accesskeyid or              [s3] access_key_id, from {})",
            s.origin
        ));
    }
    let (url, region, path_style) = match endpoint {
        Some(url) => (url, s.region.as_str(), s.path_style),
        None => (
            source.endpoint.as_str(),
            source.region.as_str(),
            source.path_style,
        ),
    };
    let endpoint = crate::s3::Endpoint::parse(url, None)?;
    let mut config = S3Config::new(
        endpoint,
        region,
        path_style,
        &s.access_key_id,
        s.secret.clone(),
    );
    config.timeout = s.timeout;
    Ok(Client::new(config))
}

/// The prefix that quarantined objects are moved under, at the bucket's top.
pub const QUARANTINE_PREFIX: &str = "kcbackup-quarantine-";

#[derive(Debug, Clone, Default, Serialize)]
pub struct BucketRestore {
    pub endpoint: String,
    pub bucket: String,
    /// The set's key prefix, below which the bucket was checked for objects.
    pub prefix: String,
    pub objects: u64,
    pub bytes: u64,
    /// Objects moved aside because the set does not hold them (`--force`).
    pub quarantined: u64,
    /// The prefix they were moved under.
    pub quarantine: Option<String>,
    pub seconds: f64,
}

/// Where a set's objects go: a bucket on the client's endpoint, and the
/// set's key prefix in it (the part of the bucket the restore owns).
pub struct Target<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub prefix: &'a str,
}

impl Target<'_> {
    /// Every object under the prefix, in either form of it (servers differ
    /// on keeping a leading `/`), skipping earlier quarantines. A server
    /// that strips the slash answers both listings alike: only keys that
    /// begin with the prefix as asked are taken, so none comes twice.
    fn list(&self, each: &mut dyn FnMut(crate::s3::ObjectInfo) -> Result<()>) -> Result<()> {
        for prefix in prefix_forms(self.prefix) {
            self.client.list_v2(self.bucket, &prefix, &mut |info| {
                if !info.key.starts_with(&prefix) || info.key.starts_with(QUARANTINE_PREFIX) {
                    return Ok(());
                }
                each(info)
            })?;
        }
        Ok(())
    }

    /// The first key under the prefix, if any.
    pub fn first_key(&self) -> Result<Option<String>> {
        let mut first = None;
        let listed = self.list(&mut |info| {
            first = Some(info.key);
            Err(Stop.into())
        });
        match listed {
            Err(e) if e.is::<Stop>() => Ok(first),
            Err(e) => Err(e),
            Ok(()) => Ok(None),
        }
    }
}

/// Ends a listing early.
#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped after an earlier failure")
    }
}

impl std::error::Error for Stop {}

/// The prefix as given and, for one with a leading `/`, without it (an
/// empty prefix lists the whole bucket once).
fn prefix_forms(prefix: &str) -> Vec<String> {
    let bare = prefix.trim_start_matches('/');
    if bare == prefix {
        vec![prefix.to_string()]
    } else {
        vec![prefix.to_string(), bare.to_string()]
    }
}

/// Runs `work` on every item `feed` hands on, [`PARALLEL`] at a time, with
/// a few items queued (memory stays flat); the first failure stops the
/// feed and is the result.
fn in_parallel<T: Send>(
    feed: impl FnOnce(&mut dyn FnMut(T) -> Result<()>) -> Result<()>,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<T>(PARALLEL * 4);
    let rx = Mutex::new(rx);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let failed = || failure.lock().map(|f| f.is_some()).unwrap_or(true);
    let fed = std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let Ok(Ok(item)) = rx.lock().map(|rx| rx.recv()) else {
                        break;
                    };
                    if failed() {
                        continue;
                    }
                    if let Err(e) = work(item)
                        && let Ok(mut f) = failure.lock()
                    {
                        f.get_or_insert(e);
                    }
                }
            });
        }
        let fed = feed(&mut |item| {
            crate::signals::check()?;
            if failed() {
                return Err(Stop.into());
            }
            tx.send(item).map_err(|_| anyhow::Error::new(Stop))
        });
        drop(tx);
        fed
    });
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => fed,
    }
}

/// A usage error (exit 2) when the target holds objects under the prefix:
/// checked before anything is written.
pub fn refuse_non_empty(target: &Target) -> Result<()> {
    match target.first_key()? {
        None => Ok(()),
        Some(first) => config_error(format!(
            "bucket {} at {} holds objects under {:?} (the first is {first:?}); restore refuses \
             to mix them with the set's (use --force to move what the set does not hold under \
             a {QUARANTINE_PREFIX}<time>/ prefix)",
            target.bucket,
            target.client.endpoint(),
            target.prefix
        )),
    }
}

/// The whole restore into a bucket: [`prepare`], then [`upload`].
pub fn restore(
    target: &Target,
    store: &ObjectStore,
    index: &Path,
    force: bool,
) -> Result<BucketRestore> {
    let started = Instant::now();
    let mut report = BucketRestore {
        endpoint: target.client.endpoint().to_string(),
        bucket: target.bucket.to_string(),
        prefix: target.prefix.to_string(),
        ..BucketRestore::default()
    };
    prepare(target, index, force, &mut report)?;
    upload(target, store, index, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Refuses a target with objects under the prefix unless `force`; with
/// `force`, moves every object there that the set does not hold (or holds
/// with another size or ETag) under a new quarantine prefix.
pub fn prepare(
    target: &Target,
    index: &Path,
    force: bool,
    report: &mut BucketRestore,
) -> Result<()> {
    if !force {
        return refuse_non_empty(target);
    }
    if target.first_key()?.is_none() {
        return Ok(());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let quarantine = format!("{QUARANTINE_PREFIX}{stamp}/");
    let moved = AtomicU64::new(0);
    // The set's keys and the listing are both in byte order: one pass over
    // each, comparing keys with their leading `/` stripped.
    let mut held = read_index(index)?.peekable();
    in_parallel(
        |send| {
            target.list(&mut |info| {
                let bare = info.key.trim_start_matches('/');
                let mut keep = false;
                while let Some(next) = held.peek() {
                    let entry = match next {
                        Ok(entry) => entry,
                        Err(_) => match held.next() {
                            Some(Err(e)) => return Err(e),
                            _ => continue,
                        },
                    };
                    match entry.path.trim_start_matches('/').cmp(bare) {
                        std::cmp::Ordering::Less => {
                            held.next();
                        }
                        std::cmp::Ordering::Equal => {
                            keep = same_object(entry, &info);
                            break;
                        }
                        std::cmp::Ordering::Greater => break,
                    }
                }
                match keep {
                    true => Ok(()),
                    false => send(info),
                }
            })
        },
        |info| {
            move_object(target, &info, &format!("{quarantine}{}", info.key))?;
            moved.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
    )
    .with_context(|| {
        format!(
            "while moving objects the set does not hold under {quarantine} in bucket {}",
            target.bucket
        )
    })?;
    report.quarantined = moved.into_inner();
    if report.quarantined > 0 {
        report.quarantine = Some(quarantine);
    }
    Ok(())
}

/// An object already in the bucket that the restore may leave in place: the
/// set's size and, where both are known, its ETag. Any other is quarantined
/// before the set's is written over it.
fn same_object(entry: &IndexEntry, listed: &crate::s3::ObjectInfo) -> bool {
    entry.size == listed.size
        && match (&entry.etag, &listed.etag) {
            (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
            _ => true,
        }
}

/// Copy then delete: the original is removed only once the copy is whole.
fn move_object(target: &Target, from: &crate::s3::ObjectInfo, to: &str) -> Result<()> {
    let (client, bucket) = (target.client, target.bucket);
    client.put_reader(bucket, to, from.size, &mut || {
        Ok(client.get(bucket, &from.key, None)?.reader)
    })?;
    client.delete(bucket, &from.key, None)?;
    Ok(())
}

/// PUTs every object of the set's index (checked by
/// [`super::s3::check_index`]) under its key, [`PARALLEL`] at a time. A
/// stored object that does not match the set fails the restore as damage
/// (exit 3), naming its key; it is never uploaded whole.
pub fn upload(
    target: &Target,
    store: &ObjectStore,
    index: &Path,
    report: &mut BucketRestore,
) -> Result<()> {
    let started = Instant::now();
    let objects = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    in_parallel(
        |send| {
            for entry in read_index(index)? {
                send(entry?)?;
            }
            Ok(())
        },
        |entry| {
            put_object(target, store, &entry)?;
            objects.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(entry.size, Ordering::Relaxed);
            Ok(())
        },
    )?;
    report.objects = objects.into_inner();
    report.bytes = bytes.into_inner();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// One object: each try reads it from the repository again through
/// [`Checked`]; once it has proved damaged, it is not tried again.
fn put_object(target: &Target, store: &ObjectStore, entry: &IndexEntry) -> Result<()> {
    let damage: Arc<Mutex<Option<String>>> = Arc::default();
    let key = &entry.path;
    let result = target
        .client
        .put_reader(target.bucket, key, entry.size, &mut || {
            if let Some(d) = damage.lock().ok().and_then(|d| d.clone()) {
                bail!("{d}");
            }
            let mut object = Checked::open(store, entry)?;
            if entry.size == 0 {
                // Nothing would be read for an empty body: check it first.
                std::io::copy(&mut object, &mut std::io::sink())?;
            }
            Ok(Box::new(Recorded {
                inner: object,
                damage: Arc::clone(&damage),
            }))
        });
    let damage = damage.lock().ok().and_then(|d| d.clone());
    match (result, damage) {
        (_, Some(d)) => {
            // Some servers (SeaweedFS) keep an empty object for an upload
            // that broke off: none may stand under the key as restored.
            let left = match target.client.delete(target.bucket, key, None) {
                Ok(()) => "the broken upload was deleted".to_string(),
                Err(e) => format!("the broken upload could not be deleted: {e}"),
            };
            Err(anyhow::Error::new(Damaged(format!("{d} ({left})"))))
        }
        (Err(e), None) => Err(anyhow::Error::new(e)),
        (Ok(()), None) => Ok(()),
    }
    .with_context(|| format!("while restoring the object {key:?} into {}", target.bucket))
}

/// Notes the damage a [`Checked`] read finds, which the HTTP client would
/// otherwise report as a broken upload.
struct Recorded {
    inner: Checked,
    damage: Arc<Mutex<Option<String>>>,
}

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Some(d) = e.get_ref().and_then(|e| e.downcast_ref::<Damaged>())
                && let Ok(mut slot) = self.damage.lock()
            {
                slot.get_or_insert_with(|| d.0.clone());
            }
        })
    }
}

/// Deletes every object in a drill's scratch bucket, [`PARALLEL`] at a
/// time; the number deleted.
pub fn empty_bucket(client: &Client, bucket: &str) -> Result<u64> {
    let deleted = AtomicU64::new(0);
    in_parallel(
        |send| client.list_v2(bucket, "", &mut |info| send(info.key)),
        |key| {
            client.delete(bucket, &key, None)?;
            deleted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
    )
    .with_context(|| format!("while emptying the scratch bucket {bucket}"))?;
    Ok(deleted.into_inner())
}

/// An s3 set's objects restored into a (scratch) bucket.
pub struct ObjectsInBucket<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
}

impl RestoredObjects for ObjectsInBucket<'_> {
    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.client.head(self.bucket, key)?.is_some())
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + '_>>> {
        match self.client.get(self.bucket, key, None) {
            Ok(body) => Ok(Some(body.reader)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_stops_the_feed_and_is_the_result() {
        let done = AtomicU64::new(0);
        let mut fed = 0u64;
        let result = in_parallel(
            |send| {
                for n in 0..10_000u64 {
                    fed += 1;
                    send(n)?;
                }
                Ok(())
            },
            |n| {
                if n == 3 {
                    bail!("object 3 failed");
                }
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        );
        assert_eq!(result.unwrap_err().to_string(), "object 3 failed");
        assert!(fed < 10_000, "the feed went on: {fed}");
        let all = in_parallel(
            |send| (0..100u64).try_for_each(&mut *send),
            |_| {
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        );
        assert!(all.is_ok());
    }

    #[test]
    fn both_forms_of_a_prefix_are_listed() {
        assert_eq!(prefix_forms("/var/x/"), vec!["/var/x/", "var/x/"]);
        assert_eq!(prefix_forms("var/x/"), vec!["var/x/"]);
        assert_eq!(prefix_forms(""), vec![""]);
        assert_eq!(
            super::super::checks::key_forms("/a/1"),
            vec!["/a/1", "a/1", "/a/1"][..2]
        );
    }
}
