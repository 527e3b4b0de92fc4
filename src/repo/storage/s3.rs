//! [`Storage`] on S3-compatible object storage (README "Repositories on
//! object storage"): each key is an object below the repository's prefix.
//! Objects are written once and never rewritten; every PUT is confirmed
//! by a HEAD of its size before it is trusted (also when the PUT failed:
//! it may have landed); nothing depends on conditional writes. A set is
//! visible once `sets/<id>/manifest.json` exists, written after every
//! other file of the set is confirmed. The lock is an object
//! ([`super::s3_lock`]).
//!
//! Internal keys start with `.` and are never listed as keys: `.locks/`,
//! `.trash/<id>` (a set prune retired), `objects/.corrupt/`. Staged objects
//! and set files wait in a private local directory (removed on exit; a
//! killed run's is removed by the next writer).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::{SETS, StagedFile, Storage, check_key};
use crate::repo::lock::{ExclusiveLock, SharedLock};
use crate::repo::manifest::{MANIFEST, MANIFEST_SUM};
use crate::s3::{Client, Endpoint, S3Config};
use crate::settings::S3Repo;

/// When a lock object not refreshed counts as stale (README).
pub use super::s3_lock::STALE as LOCK_STALE;

/// Objects above this size are uploaded in parts.
pub const MULTIPART_ABOVE: u64 = 64 << 20;
/// The size of one part.
const PART_SIZE: u64 = 16 << 20;

/// Prefix of the markers of retired sets.
const TRASH: &str = ".trash/";
/// Prefix of this process's local staging directory in TMPDIR.
const LOCAL_PREFIX: &str = "kcbackup-s3-";

/// Requests sent, by kind (printed at `-v`, asserted by tests).
#[derive(Debug, Default)]
pub struct Requests {
    pub list: AtomicU64,
    /// LISTs below `objects/` (only prune and `list` totals need them).
    pub list_objects: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
}

impl Requests {
    pub fn summary(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "LIST {} (objects/ {}) HEAD {} GET {} PUT {} DELETE {}",
            n(&self.list),
            n(&self.list_objects),
            n(&self.head),
            n(&self.get),
            n(&self.put),
            n(&self.delete)
        )
    }
}

pub struct S3Storage {
    pub(super) client: Client,
    pub(super) bucket: String,
    /// `""` or `kc/main/`: every key of the repository starts with it.
    prefix: String,
    url: String,
    parallel: usize,
    /// Staged objects (`stage/`) and local copies of sets (`sets/<id>/`).
    local: tempfile::TempDir,
    next_temp: AtomicU64,
    /// Sets being written by this run (their `begin_set` returned a dir).
    staging: Mutex<HashSet<String>>,
    /// Sets whose files are all in the local copy.
    fetched: Mutex<HashSet<String>>,
    pub requests: Requests,
    /// Objects above this many bytes go up in parts ([`MULTIPART_ABOVE`]).
    pub multipart_above: u64,
    /// What this run learnt of keys by HEAD and confirmed PUTs (`None`:
    /// absent), so one key is not asked twice: only lock holders write,
    /// and this run's own writes and deletes update it. Bounded: cleared
    /// when it holds [`KNOWN_MAX`] keys.
    known: Mutex<std::collections::HashMap<String, Option<u64>>>,
}

/// The most keys [`S3Storage`] remembers at once.
const KNOWN_MAX: usize = 100_000;

impl Drop for S3Storage {
    fn drop(&mut self) {
        tracing::info!("S3 requests to {}: {}", self.url, self.requests.summary());
    }
}

/// An S3 failure as an error of the run: refused credentials (403) and a
/// missing bucket are the configuration's to fix (exit 2).
/// The answer to a request in a bucket that does not exist.
fn no_bucket() -> crate::s3::ErrorKind {
    crate::s3::ErrorKind::Status {
        status: 404,
        code: Some("NoSuchBucket".into()),
    }
}

fn s3_error(e: crate::s3::Error) -> anyhow::Error {
    let config = match &e.kind {
        crate::s3::ErrorKind::Status { status: 403, .. } => true,
        crate::s3::ErrorKind::Status { code, .. } => code.as_deref() == Some("NoSuchBucket"),
        _ => false,
    };
    if config {
        crate::error::ConfigError(e.to_string()).into()
    } else {
        e.into()
    }
}

/// `error` as an `io::Error` of kind `NotFound` (the trait's "no such key").
fn not_found(what: String) -> anyhow::Error {
    io::Error::new(io::ErrorKind::NotFound, what).into()
}

impl S3Storage {
    pub fn new(repo: &S3Repo) -> Result<S3Storage> {
        let endpoint = Endpoint::parse(&repo.endpoint, None)
            .map_err(|e| anyhow!("{}: endpoint {}: {e}", repo.url(), repo.endpoint))?;
        let mut config = S3Config::new(
            endpoint,
            &repo.region,
            repo.path_style,
            &repo.access_key_id,
            repo.secret_access_key.clone(),
        );
        config.timeout = repo.timeout;
        config.retries = repo.retries;
        let local = tempfile::Builder::new()
            .prefix(&format!("{LOCAL_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("while creating the local staging directory of an S3 repository")?;
        Ok(S3Storage {
            client: Client::new(config),
            bucket: repo.bucket.clone(),
            prefix: match repo.prefix.as_str() {
                "" => String::new(),
                p => format!("{p}/"),
            },
            url: repo.url(),
            parallel: repo.parallel.max(1),
            local,
            next_temp: AtomicU64::new(0),
            staging: Mutex::new(HashSet::new()),
            fetched: Mutex::new(HashSet::new()),
            requests: Requests::default(),
            multipart_above: MULTIPART_ABOVE,
            known: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The object key of repository key (or internal name) `key`.
    pub(super) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// HEAD, asked of the server every time (confirmations use it).
    pub(super) fn head(&self, key: &str) -> Result<Option<u64>> {
        self.requests.head.fetch_add(1, Ordering::Relaxed);
        let size = self
            .client
            .head(&self.bucket, &self.full(key))
            .map_err(s3_error)?
            .map(|i| i.size);
        self.learn(key, size);
        Ok(size)
    }

    /// What this run knows of `key`, else HEAD.
    fn head_known(&self, key: &str) -> Result<Option<u64>> {
        let known = self.known.lock().ok().and_then(|k| k.get(key).copied());
        match known {
            Some(size) => Ok(size),
            None => self.head(key),
        }
    }

    fn learn(&self, key: &str, size: Option<u64>) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
            known.insert(key.to_owned(), size);
        }
    }

    pub(super) fn get_raw(&self, key: &str) -> Result<Box<dyn io::Read + Send>> {
        self.requests.get.fetch_add(1, Ordering::Relaxed);
        match self.client.get(&self.bucket, &self.full(key), None) {
            Ok(body) => Ok(body.reader),
            Err(e) if e.is_not_found() && e.kind != no_bucket() => {
                Err(not_found(format!("{} does not exist", self.locate(key))))
            }
            Err(e) => Err(s3_error(e)),
        }
    }

    /// PUT from memory, then HEAD: the size must be what was sent.
    pub(super) fn put_bytes_confirmed(&self, key: &str, data: &[u8]) -> Result<()> {
        self.requests.put.fetch_add(1, Ordering::Relaxed);
        let put = self.client.put_bytes(&self.bucket, &self.full(key), data);
        self.confirm(key, data.len() as u64, put.err())
    }

    /// PUT a local file, then HEAD.
    fn put_file_confirmed(&self, key: &str, path: &Path) -> Result<()> {
        let len = fs::metadata(path)
            .with_context(|| format!("while reading {}", path.display()))?
            .len();
        self.requests.put.fetch_add(1, Ordering::Relaxed);
        let put = if len > self.multipart_above {
            let part = PART_SIZE.max(self.multipart_above / 4);
            self.client
                .put_file_multipart(&self.bucket, &self.full(key), path, part)
        } else {
            self.client.put_file(&self.bucket, &self.full(key), path)
        };
        self.confirm(key, len, put.err())
    }

    /// A PUT is trusted only once HEAD shows the object at its size; a PUT
    /// that failed may still have landed, so HEAD decides then too.
    fn confirm(&self, key: &str, len: u64, put_error: Option<crate::s3::Error>) -> Result<()> {
        match (self.head(key), put_error) {
            (Ok(Some(n)), _) if n == len => Ok(()),
            (Ok(found), Some(e)) => Err(anyhow::Error::new(e).context(format!(
                "while storing {} (HEAD after the failed PUT: {})",
                self.locate(key),
                found.map_or("absent".to_owned(), |n| format!("{n} bytes of {len}"))
            ))),
            (Ok(found), None) => bail!(
                "the PUT of {} did not land: HEAD shows {} instead of {len} bytes",
                self.locate(key),
                found.map_or("nothing".to_owned(), |n| format!("{n} bytes"))
            ),
            (Err(e), _) => Err(e.context(format!("while confirming {}", self.locate(key)))),
        }
    }

    pub(super) fn delete_raw(&self, key: &str) -> Result<()> {
        self.requests.delete.fetch_add(1, Ordering::Relaxed);
        self.learn(key, None);
        Ok(self.client.delete(&self.bucket, &self.full(key), None)?)
    }

    /// Every object below internal or repository prefix `prefix` (ending in
    /// `/`, or empty), hidden names included, as (key, size).
    pub(super) fn list_raw(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(&str, u64) -> Result<()>,
    ) -> Result<()> {
        self.requests.list.fetch_add(1, Ordering::Relaxed);
        if prefix.is_empty() || prefix.starts_with("objects") {
            self.requests.list_objects.fetch_add(1, Ordering::Relaxed);
        }
        let full = self.full(prefix);
        let strip = self.prefix.len();
        self.client.list_v2(
            &self.bucket,
            &full,
            &mut |info| match info.key.get(strip..) {
                Some(key) if info.key.starts_with(&self.prefix) => each(key, info.size),
                _ => Ok(()),
            },
        )
    }

    fn temp_path(&self, dir: &str) -> Result<PathBuf> {
        let dir = self.local.path().join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(n.to_string()))
    }

    /// Runs `job` on every item with up to `parallel` threads; the first
    /// error is returned (the others finish their item and stop).
    fn in_parallel<T: Sync, R: Send>(
        &self,
        items: &[T],
        job: &(dyn Fn(&T) -> Result<R> + Sync),
    ) -> Result<Vec<R>> {
        let next = AtomicU64::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<R>>>> =
            Mutex::new((0..items.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..self.parallel.min(items.len()) {
                scope.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(item) = items.get(i) else { return };
                        let r = job(item);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                    }
                });
            }
        });
        let all = results
            .into_inner()
            .map_err(|_| anyhow!("a transfer thread panicked"))?;
        let mut out = Vec::with_capacity(items.len());
        let mut first_error = None;
        for r in all {
            match r {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if out.len() == items.len() => Ok(out),
            None => bail!("a transfer thread stopped early"),
        }
    }

    /// The local copy of set `id`.
    fn local_set(&self, id: &str) -> PathBuf {
        self.local.path().join("sets").join(id)
    }

    /// Downloads `key` into `path` (a temporary name, then renamed).
    fn download(&self, key: &str, path: &Path) -> Result<()> {
        let tmp = path.with_extension("part");
        let mut reader = self.get_raw(key)?;
        let mut file =
            File::create(&tmp).with_context(|| format!("while creating {}", tmp.display()))?;
        io::copy(&mut reader, &mut file)
            .with_context(|| format!("while downloading {}", self.locate(key)))?;
        fs::rename(&tmp, path).with_context(|| format!("while writing {}", path.display()))
    }

    /// The ids of retired sets and of every set with any file, by
    /// whether it has a manifest.
    fn set_files(&self) -> Result<BTreeMap<String, SetObjects>> {
        let mut sets: BTreeMap<String, SetObjects> = BTreeMap::new();
        self.list_raw(&format!("{SETS}/"), &mut |key, size| {
            let rest = &key[SETS.len() + 1..];
            if let Some((id, name)) = rest.split_once('/') {
                let entry = sets.entry(id.to_owned()).or_default();
                entry.0 |= name == MANIFEST;
                entry.1.push((key.to_owned(), size));
            }
            Ok(())
        })?;
        Ok(sets)
    }

    fn retired(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        self.list_raw(TRASH, &mut |key, _| {
            ids.push(key[TRASH.len()..].to_owned());
            Ok(())
        })?;
        Ok(ids)
    }

    /// Removes local staging directories of S3 runs that are gone.
    fn remove_dead_local_dirs(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(LOCAL_PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = crate::process::Stamp { pid, start: 0 }.is_alive();
            if !alive && fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path().display().to_string());
            }
        }
        removed
    }
}

/// Whether a set id has its manifest stored, and every object of it (key, size).
type SetObjects = (bool, Vec<(String, u64)>);

/// Refuses internal names that could leave the repository.
fn check_internal(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|c| c.is_empty() || c == "..")
    {
        bail!("not a repository key: {name:?}");
    }
    Ok(())
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full(key))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<bool> {
        check_key(key)?;
        // Without conditional writes: HEAD, then PUT. Records are written
        // under the lock or under names of their own (drill reports carry
        // their time), so no two runs race for one name.
        if self.head(key)?.is_some() {
            return Ok(false);
        }
        self.put_bytes_confirmed(key, data)?;
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<Box<dyn BufRead + Send>> {
        check_key(key)?;
        Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            self.get_raw(key)?,
        )))
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        self.head_known(key)
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()> {
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => {
                check_key(p)?;
                format!("{p}/")
            }
        };
        self.list_raw(&prefix, &mut |key, size| {
            if key.split('/').any(|c| c.starts_with('.') || c.is_empty()) {
                return Ok(());
            }
            each(key, size)
        })
    }

    fn delete(&self, _lock: &ExclusiveLock, key: &str) -> Result<bool> {
        check_key(key)?;
        if self.head(key)?.is_none() {
            return Ok(false);
        }
        self.delete_raw(key)?;
        Ok(true)
    }

    fn move_aside(&self, key: &str, to: &str) -> Result<bool> {
        check_key(key)?;
        check_internal(to)?;
        if self.head(to)?.is_some() {
            return Ok(false);
        }
        // No server-side copy in the client: down, up, confirmed, then gone.
        let tmp = self.temp_path("aside")?;
        self.download(key, &tmp)?;
        let stored = self.put_file_confirmed(to, &tmp);
        let _ = fs::remove_file(&tmp);
        stored?;
        self.delete_raw(key)?;
        Ok(true)
    }

    fn stage(&self, _prefix: &str) -> Result<StagedFile> {
        let path = self.temp_path("stage")?;
        let file =
            File::create(&path).with_context(|| format!("while creating {}", path.display()))?;
        Ok(StagedFile { path, file })
    }

    fn commit(&self, batch: Vec<(PathBuf, String)>) -> Result<Vec<bool>> {
        for (_, key) in &batch {
            check_key(key)?;
        }
        let result = self.in_parallel(&batch, &|(path, key)| {
            let len = fs::metadata(path)
                .with_context(|| format!("while reading {}", path.display()))?
                .len();
            // Content-addressed: a stored object of the right size is the
            // same object; verify and rolling re-reads catch a damaged one.
            if self.head_known(key)? == Some(len) {
                return Ok(false);
            }
            self.put_file_confirmed(key, path)?;
            Ok(true)
        });
        for (path, _) in &batch {
            let _ = fs::remove_file(path);
        }
        result
    }

    fn barrier(&self) -> Result<()> {
        // Every object was confirmed by HEAD when committed.
        Ok(())
    }

    fn begin_set(&self, id: &str) -> Result<Option<PathBuf>> {
        check_key(&format!("{SETS}/{id}"))?;
        let mut staging = self.staging.lock().map_err(|_| anyhow!("poisoned"))?;
        if staging.contains(id) || self.head(&format!("{SETS}/{id}/{MANIFEST}"))?.is_some() {
            return Ok(None);
        }
        let dir = self.local_set(id);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
        staging.insert(id.to_owned());
        Ok(Some(dir))
    }

    fn publish_set(&self, id: &str, staging: &Path) -> Result<()> {
        let mut files = Vec::new();
        for entry in
            fs::read_dir(staging).with_context(|| format!("while listing {}", staging.display()))?
        {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != MANIFEST && name != MANIFEST_SUM {
                files.push(name);
            }
        }
        let upload = |name: &String| {
            self.put_file_confirmed(&format!("{SETS}/{id}/{name}"), &staging.join(name))
        };
        self.in_parallel(&files, &upload)
            .with_context(|| format!("while publishing set {id}"))?;
        // The manifest last: its object is what makes the set visible.
        for name in [MANIFEST_SUM, MANIFEST] {
            if staging.join(name).exists() {
                upload(&name.to_owned()).with_context(|| format!("while publishing set {id}"))?;
            }
        }
        if let Ok(mut s) = self.staging.lock() {
            s.remove(id);
        }
        if staging != self.local_set(id) {
            let _ = fs::remove_dir_all(self.local_set(id));
            fs::create_dir_all(self.local.path().join("sets"))?;
            fs::rename(staging, self.local_set(id))?;
        }
        if let Ok(mut f) = self.fetched.lock() {
            f.insert(id.to_owned());
        }
        Ok(())
    }

    fn abandon_set(&self, staging: &Path) {
        let _ = fs::remove_dir_all(staging);
        if let (Some(id), Ok(mut s)) = (staging.file_name(), self.staging.lock()) {
            s.remove(id.to_string_lossy().as_ref());
        }
    }

    fn set_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .set_files()?
            .into_iter()
            .filter(|(_, (manifest, _))| *manifest)
            .map(|(id, _)| id)
            .collect())
    }

    fn set_dir(&self, id: &str) -> Result<PathBuf> {
        check_key(&format!("{SETS}/{id}"))?;
        let dir = self.local_set(id);
        fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
        // Enough to read the manifest; the rest comes with `fetch_set`.
        for name in [MANIFEST, MANIFEST_SUM] {
            let path = dir.join(name);
            if path.exists() {
                continue;
            }
            match self.download(&format!("{SETS}/{id}/{name}"), &path) {
                Err(e) if super::is_not_found(&e) => {}
                other => other?,
            }
        }
        Ok(dir)
    }

    fn fetch_set(&self, id: &str) -> Result<()> {
        if self
            .fetched
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .contains(id)
        {
            return Ok(());
        }
        let dir = self.set_dir(id)?;
        let mut files = Vec::new();
        let prefix = format!("{SETS}/{id}/");
        self.list_raw(&prefix, &mut |key, size| {
            files.push((key[prefix.len()..].to_owned(), size));
            Ok(())
        })?;
        let wanted: Vec<(String, u64)> = files
            .into_iter()
            .filter(|(name, size)| {
                !name.contains('/')
                    && fs::metadata(dir.join(name)).map_or(true, |m| m.len() != *size)
            })
            .collect();
        self.in_parallel(&wanted, &|(name, _)| {
            self.download(&format!("{prefix}{name}"), &dir.join(name))
        })?;
        if let Ok(mut f) = self.fetched.lock() {
            f.insert(id.to_owned());
        }
        Ok(())
    }

    fn retire_set(&self, _lock: &ExclusiveLock, id: &str) -> Result<()> {
        check_key(&format!("{SETS}/{id}"))?;
        if self.head(&format!("{SETS}/{id}/{MANIFEST}"))?.is_none() {
            bail!(
                "while retiring set {id}: it is not published in {}",
                self.url
            );
        }
        // The marker first: a prune killed after it finishes the job; then
        // the manifest goes, and with it the set.
        self.put_bytes_confirmed(&format!("{TRASH}{id}"), b"")?;
        self.delete_raw(&format!("{SETS}/{id}/{MANIFEST}"))?;
        if let Ok(mut f) = self.fetched.lock() {
            f.remove(id);
        }
        Ok(())
    }

    fn retired_sets(&self) -> Result<Vec<String>> {
        self.retired()
    }

    fn delete_retired(&self, _lock: &ExclusiveLock, id: &str) -> Result<u64> {
        check_key(id)?;
        let mut keys = Vec::new();
        self.list_raw(&format!("{SETS}/{id}/"), &mut |key, size| {
            keys.push((key.to_owned(), size));
            Ok(())
        })?;
        let bytes = keys.iter().map(|(_, n)| n).sum();
        self.in_parallel(&keys, &|(key, _)| self.delete_raw(key))?;
        self.delete_raw(&format!("{TRASH}{id}"))?;
        let _ = fs::remove_dir_all(self.local_set(id));
        Ok(bytes)
    }

    fn set_aside(&self, prefix: &str) -> Result<(u64, u64)> {
        check_internal(prefix)?;
        let (mut n, mut bytes) = (0, 0);
        self.list_raw(
            &format!("{}/", prefix.trim_end_matches('/')),
            &mut |_, size| {
                n += 1;
                bytes += size;
                Ok(())
            },
        )?;
        Ok((n, bytes))
    }

    fn remove_leftovers(&self, _lock: &ExclusiveLock) -> Result<Vec<String>> {
        for dir in self.remove_dead_local_dirs() {
            tracing::info!("removed {dir}, left by a killed run");
        }
        let mut removed = Vec::new();
        // Sets this process began and neither published nor abandoned.
        let begun: Vec<String> = self
            .staging
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .drain()
            .collect();
        for id in begun {
            let _ = fs::remove_dir_all(self.local_set(&id));
            removed.push(format!(".work-{id}"));
        }
        let retired: HashSet<String> = self.retired()?.into_iter().collect();
        for (id, (manifest, files)) in self.set_files()? {
            if manifest || retired.contains(&id) {
                continue;
            }
            // The files of a publish that never reached its manifest.
            self.in_parallel(&files, &|(key, _)| self.delete_raw(key))?;
            let name = format!(".work-{id}");
            if !removed.contains(&name) {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    fn lock_exclusive(&self, operation: &str, wait: Duration) -> Result<ExclusiveLock> {
        Ok(ExclusiveLock::remote(Box::new(super::s3_lock::acquire(
            self, true, operation, wait,
        )?)))
    }

    fn lock_shared(&self, operation: &str, wait: Duration) -> Result<SharedLock> {
        Ok(SharedLock::remote(Box::new(super::s3_lock::acquire(
            self, false, operation, wait,
        )?)))
    }

    fn unlock_stale(&self) -> Result<super::Unlocked> {
        super::s3_lock::unlock_stale(self)
    }
}
