//! The repository lock on object storage, without conditional writes: each
//! holder writes its own object `.locks/<kind>-<host>-<pid>-<n>.json`
//! (host, pid, operation, time), then lists `.locks/` again and backs off
//! if a conflicting holder is there too, so two runs can never both go
//! on (at worst both back off). A thread refreshes the object every
//! [`REFRESH`] while the run lasts; a lock not refreshed for [`STALE`] is
//! stale. Stale or not, a lock is never broken by another run: `kcbackup
//! unlock` removes it, and refuses one that is fresh and not provably dead.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, Local, Utc};
use serde::{Deserialize, Serialize};

use super::Unlocked;
use super::s3::S3Storage;
use crate::process::Stamp;
use crate::repo::lock::RemoteHold;
use crate::s3::Client;

/// Where the lock objects are.
const LOCKS: &str = ".locks/";
/// How often a holder rewrites its lock object.
pub const REFRESH: Duration = Duration::from_secs(60);
/// A lock object not rewritten for this long belongs to a run that is gone
/// (or cut off): `unlock` may remove it. Hosts' clocks must agree to well
/// within this.
pub const STALE: Duration = Duration::from_secs(10 * 60);
/// How often a run waiting for the lock (`--lock-wait`) looks again.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// What a lock object says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    /// The process's start time (with the pid, tells a reused pid apart).
    start: u64,
    operation: String,
    exclusive: bool,
    since: DateTime<Utc>,
    refreshed: DateTime<Utc>,
}

impl Holder {
    fn age(&self) -> Duration {
        (Utc::now() - self.refreshed)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    fn is_stale(&self) -> bool {
        self.age() > STALE
    }

    /// On this host and its process gone: dead for certain.
    fn is_dead_here(&self) -> bool {
        self.host == hostname()
            && !Stamp {
                pid: self.pid,
                start: self.start,
            }
            .is_alive()
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "{} on {}, pid {}, since {}",
            self.operation,
            self.host,
            self.pid,
            self.since.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S")
        );
        if self.is_dead_here() {
            text.push_str(" (that process is gone: `kcbackup unlock` removes its lock)");
        } else if self.is_stale() {
            text.push_str(&format!(
                " (stale: not refreshed for {} min; if that run is dead, `kcbackup unlock` removes it)",
                self.age().as_secs() / 60
            ));
        }
        text
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Every lock object: key and what it says (unreadable ones count as an
/// exclusive holder of unknown origin: never ignored).
fn holders(s: &S3Storage) -> Result<Vec<(String, Holder)>> {
    let mut keys = Vec::new();
    s.list_raw(LOCKS, &mut |key, _| {
        keys.push(key.to_owned());
        Ok(())
    })?;
    let mut out = Vec::new();
    for key in keys {
        let mut bytes = Vec::new();
        let read = s
            .get_raw(&key)
            .and_then(|mut r| Ok(std::io::Read::read_to_end(&mut r, &mut bytes)?));
        match read {
            Err(e) if super::is_not_found(&e) => continue, // released meanwhile
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let holder = serde_json::from_slice(&bytes).unwrap_or_else(|_| Holder {
            host: "?".into(),
            pid: 0,
            start: 0,
            operation: format!("an unreadable lock object {key}"),
            exclusive: true,
            since: DateTime::<Utc>::MIN_UTC,
            refreshed: DateTime::<Utc>::MIN_UTC,
        });
        out.push((key, holder));
    }
    Ok(out)
}

/// A held lock: its object, refreshed by a thread until dropped.
pub struct S3Lock {
    stop: Arc<AtomicBool>,
    refresher: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    bucket: String,
    key: String,
    holder: Mutex<Holder>,
}

impl Shared {
    fn write(&self) -> Result<()> {
        let mut holder = self.holder.lock().map_err(|_| anyhow!("poisoned"))?;
        holder.refreshed = Utc::now();
        let json = serde_json::to_vec(&*holder)?;
        drop(holder);
        self.client.put_bytes(&self.bucket, &self.key, &json)?;
        Ok(())
    }
}

impl RemoteHold for S3Lock {
    fn describe(&self, operation: &str) {
        if let Ok(mut h) = self.shared.holder.lock() {
            h.operation = operation.to_owned();
        }
        if let Err(e) = self.shared.write() {
            tracing::debug!("lock object not updated: {e:#}");
        }
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.refresher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Err(e) = self
            .shared
            .client
            .delete(&self.shared.bucket, &self.shared.key, None)
        {
            tracing::warn!(
                "the lock object {} was not removed ({e}); `kcbackup unlock` removes it once stale",
                self.shared.key
            );
        }
    }
}

/// The holders other than lock object `mine` that keep a run wanting
/// `exclusive` out.
fn in_the_way(s: &S3Storage, mine: &str, exclusive: bool) -> Result<Vec<Holder>> {
    Ok(holders(s)?
        .into_iter()
        .filter(|(key, h)| key != mine && (exclusive || h.exclusive))
        .map(|(_, h)| h)
        .collect())
}

/// Takes the lock (waiting up to `wait`), or fails naming every holder in the way.
pub fn acquire(s: &S3Storage, exclusive: bool, operation: &str, wait: Duration) -> Result<S3Lock> {
    let started = Instant::now();
    let me = Stamp::current();
    let host = hostname();
    let n = rand::random::<u32>();
    let kind = if exclusive { "x" } else { "s" };
    let name = format!("{LOCKS}{kind}-{host}-{}-{n:08x}.json", me.pid);
    let now = Utc::now();
    let shared = Arc::new(Shared {
        client: Client::new(s.client.config().clone()),
        bucket: s.bucket.clone(),
        key: s.full(&name),
        holder: Mutex::new(Holder {
            host,
            pid: me.pid,
            start: me.start,
            operation: operation.to_owned(),
            exclusive,
            since: now,
            refreshed: now,
        }),
    });
    let mut said = false;
    loop {
        crate::signals::check()?;
        let in_way = in_the_way(s, &name, exclusive)?;
        if in_way.is_empty() {
            shared.write()?;
            s.requests.put.fetch_add(1, Ordering::Relaxed);
            // Someone may have written theirs between our look and our write.
            let after = in_the_way(s, &name, exclusive)?;
            if after.is_empty() {
                return Ok(start_refresher(shared));
            }
            s.delete_raw(&name)?;
            if started.elapsed() >= wait {
                return Err(refusal(s, &after, wait));
            }
            // Both may have backed off: try again after a random pause.
            std::thread::sleep(Duration::from_millis(200 + u64::from(n % 800)));
            continue;
        }
        if started.elapsed() >= wait {
            return Err(refusal(s, &in_way, wait));
        }
        if !said {
            let names: Vec<String> = in_way.iter().map(Holder::describe).collect();
            tracing::warn!(
                "waiting up to {}s for the repository lock (held by {})",
                wait.as_secs(),
                names.join("; ")
            );
            said = true;
        }
        std::thread::sleep(WAIT_POLL.min(wait.saturating_sub(started.elapsed())));
    }
}

fn refusal(s: &S3Storage, holders: &[Holder], wait: Duration) -> anyhow::Error {
    let waited = if wait.is_zero() {
        String::new()
    } else {
        format!(" (waited {}s)", wait.as_secs())
    };
    let names: Vec<String> = holders.iter().map(Holder::describe).collect();
    anyhow!(
        "another kcbackup run holds the lock of {}{waited}: {}",
        super::Storage::location(s),
        names.join("; ")
    )
}

fn start_refresher(shared: Arc<Shared>) -> S3Lock {
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = {
        let (stop, shared) = (stop.clone(), shared.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::park_timeout(REFRESH);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = shared.write() {
                    tracing::warn!("the repository lock could not be refreshed: {e:#}");
                }
            }
        })
    };
    S3Lock {
        stop,
        refresher: Some(refresher),
        shared,
    }
}

/// Removes lock objects that are stale or whose process is gone from this
/// host; names the others, which stay.
pub fn unlock_stale(s: &S3Storage) -> Result<Unlocked> {
    let mut out = Unlocked::default();
    for (key, holder) in holders(s)? {
        if holder.is_stale() || holder.is_dead_here() {
            s.delete_raw(&key)?;
            out.removed.push(holder.describe());
        } else {
            out.refused.push(holder.describe());
        }
    }
    Ok(out)
}
