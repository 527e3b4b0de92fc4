//! Encryption at rest (`encryption = "age"`): a [`Storage`] wrapping any other
//! (local or S3) that age-encrypts every stored file but `config` to the
//! repository's X25519 recipients and seals every name below `objects/` etc.
//!
//! Choices (README "Encryption at rest"): contents carry age's header padded
//! to a fixed [`REGION`], so a stored size gives the plaintext size `stat`
//! must report. Names are AES-SIV of the logical key (deterministic, so
//! deduplication works across nights; reversible, so `list` and prune need
//! no name map that could drift), keyed by SHA-256 of the sorted recipients,
//! which writers hold and readers derive from the identity. Set ids and set
//! file names stay plain: they hold no content hash. Plaintext is staged in
//! `$TMPDIR`, never in the repository.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;
use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::{SETS, StagedFile, Storage, Unlocked};
use crate::error::ConfigError;
use crate::repo::lock::{ExclusiveLock, SharedLock};
use crate::repo::manifest::{MANIFEST, MANIFEST_SUM};
use crate::settings::EncryptionSpec;

/// First bytes of every encrypted file: what it is and its framing's version.
const MAGIC: &[u8; 16] = b"kcbackup-age-v1\n";
/// Bytes before age's payload: magic, header length (u16), header, padding.
/// Age's header is 70 bytes, 98 per X25519 recipient and a random "grease"
/// stanza of at most about 210: [`MAX_RECIPIENTS`] fit.
pub const REGION: u64 = 1024;
/// The most recipients whose header fits the region.
pub const MAX_RECIPIENTS: usize = 7;
/// Age's STREAM: plaintext chunk size and the tag each chunk gets.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;
/// Age's payload nonce, written before the first chunk.
const NONCE: u64 = 16;
/// Name of this run's private temporary directory (`TMPDIR`), then its pid.
const TMP_PREFIX: &str = "kcbackup-age-";
/// Where the key marker is: a record under a sealed name that only the
/// repository's own keys produce, so other keys are refused, not used to
/// write a second, unreadable store beside the first.
const MARKER: &str = "encryption/marker";
/// Associated data of sealed names: a name from another use never opens.
const NAME_AD: &[u8] = b"kcbackup name v1";

/// The plaintext size of a stored file of `stored` bytes.
pub fn plain_size(stored: u64) -> Option<u64> {
    let payload = stored.checked_sub(REGION + NONCE)?;
    let chunks = payload.div_ceil(CHUNK + TAG).max(1);
    payload.checked_sub(chunks * TAG)
}

/// An encrypting view of `inner`.
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    recipients: Vec<age::x25519::Recipient>,
    identities: Vec<age::x25519::Identity>,
    names: [u8; 32],
    /// The config section, for messages.
    what: String,
    /// Private (0700) home of staged plaintext and decrypted set copies.
    tmp: tempfile::TempDir,
    /// Plaintext staging directory of a set -> the inner one.
    staging: Mutex<HashMap<PathBuf, PathBuf>>,
    /// Sets whose every file is in the local plaintext copy.
    cached: Mutex<std::collections::HashSet<String>>,
}

impl EncryptedStorage {
    /// Reads the keys `spec` names (errors name files, never keys: exit 2).
    pub fn new(inner: Arc<dyn Storage>, spec: &EncryptionSpec) -> Result<EncryptedStorage> {
        let what = &spec.what;
        let identities: Vec<age::x25519::Identity> = match &spec.identity_file {
            Some(path) => parse_keys(path, &format!("{what} identity_file"), "AGE-SECRET-KEY-1")?,
            None => Vec::new(),
        };
        let mut recipients: Vec<age::x25519::Recipient> = match &spec.recipients_file {
            Some(path) => parse_keys(path, &format!("{what} recipients_file"), "age1")?,
            None => identities.iter().map(|i| i.to_public()).collect(),
        };
        let mut sorted: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        sorted.sort();
        sorted.dedup();
        recipients.sort_by_key(ToString::to_string);
        recipients.dedup_by_key(|r| r.to_string());
        if recipients.len() > MAX_RECIPIENTS {
            return Err(ConfigError(format!(
                "{what} recipients_file: {} recipients, at most {MAX_RECIPIENTS} fit",
                recipients.len()
            ))
            .into());
        }
        let mut names = Sha256::new();
        names.update(b"kcbackup name key v1\n");
        for r in &sorted {
            names.update(r.as_bytes());
            names.update(b"\n");
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("while creating a private temporary directory for encryption")?;
        fs::create_dir(tmp.path().join("cache"))?;
        let storage = EncryptedStorage {
            inner,
            recipients,
            identities,
            names: names.finalize().into(),
            what: what.clone(),
            tmp,
            staging: Mutex::new(HashMap::new()),
            cached: Mutex::new(Default::default()),
        };
        storage.check_keys()?;
        Ok(storage)
    }

    /// Whether the key marker is there; refuses (exit 2) keys that are not
    /// the repository's, which a marker of other keys shows.
    fn check_keys(&self) -> Result<bool> {
        let (mut ours, mut others) = (false, false);
        let prefix = MARKER.split('/').next().unwrap_or(MARKER);
        self.inner.list(prefix, &mut |stored, _| {
            match self.unmap(stored).as_deref() {
                Some(MARKER) => ours = true,
                _ => others = true,
            }
            Ok(())
        })?;
        if others && !ours {
            return Err(ConfigError(format!(
                "the repository {} is encrypted to other keys than those of {} \
                 (recipients_file or identity_file): it would not read or deduplicate",
                self.inner.location(),
                self.what
            ))
            .into());
        }
        Ok(ours)
    }

    fn need_identity(&self) -> Result<()> {
        if self.identities.is_empty() {
            return Err(ConfigError(format!(
                "the repository {} is encrypted and reading it needs its private key: \
                 set identity_file in {} (restore, verify, drill, list, prune and copy \
                 from it work only with it)",
                self.inner.location(),
                self.what
            ))
            .into());
        }
        Ok(())
    }

    fn need_recipients(&self) -> Result<()> {
        if self.recipients.is_empty() {
            return Err(ConfigError(format!(
                "the repository {} is encrypted and writing it needs recipients_file in {}",
                self.inner.location(),
                self.what
            ))
            .into());
        }
        Ok(())
    }

    fn siv(&self) -> Aes128Siv {
        Aes128Siv::new(&self.names.into())
    }

    fn seal_name(&self, rest: &str) -> String {
        let sealed = self
            .siv()
            .encrypt([NAME_AD], rest.as_bytes())
            .expect("AES-SIV encrypts any name");
        hex::encode(sealed)
    }

    fn open_name(&self, sealed: &str) -> Option<String> {
        let bytes = hex::decode(sealed).ok()?;
        let plain = self.siv().decrypt([NAME_AD], &bytes).ok()?;
        String::from_utf8(plain).ok()
    }

    /// The stored name of logical `key`.
    fn map(&self, key: &str) -> Result<String> {
        super::check_key(key)?;
        Ok(match key.split_once('/') {
            None => key.to_owned(),
            Some((SETS, _)) => key.to_owned(),
            Some((first, rest)) => {
                let sealed = self.seal_name(rest);
                format!("{first}/{}/{sealed}", &sealed[..2])
            }
        })
    }

    /// The logical key of stored name `stored`, `None` for what is not ours.
    fn unmap(&self, stored: &str) -> Option<String> {
        match stored.split_once('/') {
            None => Some(stored.to_owned()),
            Some((SETS, _)) => Some(stored.to_owned()),
            Some((first, rest)) => {
                let sealed = rest.rsplit('/').next()?;
                Some(format!("{first}/{}", self.open_name(sealed)?))
            }
        }
    }

    /// `to` of [`Storage::move_aside`]: up to its hidden component kept, the rest sealed.
    fn map_aside(&self, to: &str) -> String {
        let parts: Vec<&str> = to.split('/').collect();
        match parts.iter().position(|c| c.starts_with('.')) {
            Some(i) if i + 1 < parts.len() => format!(
                "{}/{}",
                parts[..=i].join("/"),
                self.seal_name(&parts[i + 1..].join("/"))
            ),
            _ => to.to_owned(),
        }
    }

    fn plain(key: &str) -> bool {
        key == super::CONFIG
    }

    /// Encrypts all of `from` into `to`.
    fn encrypt(&self, from: &mut dyn Read, to: impl Write) -> Result<()> {
        self.need_recipients()?;
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| anyhow!("{e}"))?;
        let mut out = encryptor.wrap_output(Framer::new(to))?;
        io::copy(from, &mut out)?;
        out.finish()?.finish()
    }

    /// A reader of the plaintext of the encrypted `stored`.
    fn decrypt(
        &self,
        mut stored: Box<dyn BufRead + Send>,
        key: &str,
    ) -> Result<Box<dyn BufRead + Send>> {
        self.need_identity()?;
        let damaged = || {
            format!(
                "{} is not a kcbackup age file or is damaged",
                self.locate(key)
            )
        };
        let mut region = vec![0; REGION as usize];
        stored.read_exact(&mut region).with_context(damaged)?;
        let len = usize::from(u16::from_be_bytes([region[16], region[17]]));
        if &region[..16] != MAGIC || 18 + len > region.len() {
            bail!(damaged());
        }
        region.truncate(18 + len);
        let input = io::Cursor::new(region.split_off(18)).chain(stored);
        let decryptor = age::Decryptor::new(input).with_context(damaged)?;
        let reader = decryptor
            .decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| {
                anyhow!(
                    "while decrypting {}: {e} (is identity_file of {} the key this \
                     repository is encrypted to?)",
                    self.locate(key),
                    self.what
                )
            })?;
        Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
    }

    /// Decrypts the file at `from` (stored as `key`) into `to`, atomically.
    fn decrypt_file(&self, from: &Path, key: &str, to: &Path) -> Result<()> {
        let stored =
            File::open(from).with_context(|| format!("while reading {}", from.display()))?;
        let mut plain = self.decrypt(Box::new(BufReader::new(stored)), key)?;
        let mut part = to.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut out = BufWriter::new(File::create(&part)?);
        io::copy(&mut plain, &mut out).with_context(|| format!("while decrypting {key}"))?;
        out.flush()?;
        fs::rename(&part, to)?;
        Ok(())
    }

    fn cache_dir(&self, id: &str) -> PathBuf {
        self.tmp.path().join("cache").join(id)
    }
}

/// Writes age's output with its header in the fixed region (see the module doc).
struct Framer<W: Write> {
    out: W,
    /// The header so far; `None` once it went out.
    head: Option<Vec<u8>>,
}

impl<W: Write> Framer<W> {
    fn new(out: W) -> Self {
        Framer {
            out,
            head: Some(Vec::new()),
        }
    }

    fn finish(mut self) -> Result<()> {
        if self.head.is_some() {
            bail!("age wrote no complete header");
        }
        self.out.flush()?;
        Ok(())
    }
}

impl<W: Write> Write for Framer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(head) = &mut self.head else {
            return self.out.write(buf);
        };
        head.extend_from_slice(buf);
        // The header ends with its MAC line, `--- <base64>\n`.
        let Some(mac) = memchr::memmem::find(head, b"\n--- ") else {
            return Ok(buf.len());
        };
        let Some(nl) = memchr::memchr(b'\n', &head[mac + 1..]) else {
            return Ok(buf.len());
        };
        let end = mac + 1 + nl + 1;
        if 18 + end > REGION as usize {
            return Err(io::Error::other(
                "the age header does not fit its region: too many recipients",
            ));
        }
        let mut region = Vec::with_capacity(REGION as usize);
        region.extend_from_slice(MAGIC);
        region.extend_from_slice(&(end as u16).to_be_bytes());
        region.extend_from_slice(&head[..end]);
        region.resize(REGION as usize, 0);
        self.out.write_all(&region)?;
        self.out.write_all(&head[end..])?;
        self.head = None;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The age keys in `path`, one a line (`#` comments and blank lines skipped).
fn parse_keys<K: FromStr>(path: &Path, what: &str, looks: &str) -> Result<Vec<K>> {
    let text = fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{what} {}: cannot be read: {e}", path.display())))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match K::from_str(line) {
            Ok(k) => keys.push(k),
            Err(_) => {
                return Err(ConfigError(format!(
                    "{what} {}: line {} is not an age X25519 key ({looks}...)",
                    path.display(),
                    n + 1
                ))
                .into());
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError(format!("{what} {} holds no key", path.display())).into());
    }
    Ok(keys)
}

impl Storage for EncryptedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn locate(&self, key: &str) -> String {
        self.inner
            .locate(&self.map(key).unwrap_or_else(|_| key.to_owned()))
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<bool> {
        if Self::plain(key) {
            return self.inner.put_if_absent(key, data);
        }
        let mut sealed = Vec::with_capacity(data.len() + REGION as usize + 64);
        self.encrypt(&mut &data[..], &mut sealed)?;
        self.inner.put_if_absent(&self.map(key)?, &sealed)
    }

    fn get(&self, key: &str) -> Result<Box<dyn BufRead + Send>> {
        if Self::plain(key) {
            return self.inner.get(key);
        }
        self.need_identity()?;
        let stored = self.inner.get(&self.map(key)?)?;
        self.decrypt(stored, key)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        if Self::plain(key) {
            return self.inner.stat(key);
        }
        Ok(self
            .inner
            .stat(&self.map(key)?)?
            .map(|n| plain_size(n).unwrap_or(0)))
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()> {
        let prefix = prefix.trim_end_matches('/');
        let first = prefix.split('/').next().unwrap_or("");
        if first.is_empty() {
            // The whole store (what it holds in bytes): stored sizes.
            return self.inner.list("", each);
        }
        let inner_prefix = if first == SETS { prefix } else { first };
        let wanted = format!("{prefix}/");
        self.inner.list(inner_prefix, &mut |stored, size| {
            let Some(key) = self.unmap(stored) else {
                tracing::debug!("skipping {stored}: not a name of this repository's key");
                return Ok(());
            };
            if key.starts_with(&wanted) {
                each(&key, plain_size(size).unwrap_or(0))?;
            }
            Ok(())
        })
    }

    fn delete(&self, lock: &ExclusiveLock, key: &str) -> Result<bool> {
        self.inner.delete(lock, &self.map(key)?)
    }

    fn move_aside(&self, key: &str, to: &str) -> Result<bool> {
        self.inner.move_aside(&self.map(key)?, &self.map_aside(to))
    }

    fn stage(&self, _prefix: &str) -> Result<StagedFile> {
        let (file, path) = tempfile::Builder::new()
            .prefix("stage-")
            .tempfile_in(self.tmp.path())
            .context("while staging an object for encryption")?
            .keep()
            .map_err(|e| anyhow!("while staging an object for encryption: {e}"))?;
        Ok(StagedFile { path, file })
    }

    fn commit(&self, batch: Vec<(PathBuf, String)>) -> Result<Vec<bool>> {
        let mut sealed = Vec::with_capacity(batch.len());
        let mut result = Ok(());
        for (plain, key) in &batch {
            if result.is_ok() {
                result = (|| {
                    let stored = self.map(key)?;
                    let first = stored.split('/').next().unwrap_or("").to_owned();
                    let staged = self.inner.stage(&first)?;
                    sealed.push((staged.path, stored));
                    let mut from = File::open(plain)?;
                    let mut out = BufWriter::with_capacity(1 << 16, staged.file);
                    self.encrypt(&mut from, &mut out)?;
                    out.into_inner().map_err(|e| e.into_error())?;
                    anyhow::Ok(())
                })()
                .with_context(|| format!("while encrypting {key}"));
            }
            let _ = fs::remove_file(plain);
        }
        if let Err(e) = result {
            for (path, _) in &sealed {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
        self.inner.commit(sealed)
    }

    fn barrier(&self) -> Result<()> {
        self.inner.barrier()
    }

    fn begin_set(&self, id: &str) -> Result<Option<PathBuf>> {
        self.need_recipients()?;
        let Some(inner) = self.inner.begin_set(id)? else {
            return Ok(None);
        };
        let plain = self.tmp.path().join(format!("set-{id}"));
        let _ = fs::remove_dir_all(&plain);
        fs::create_dir(&plain).with_context(|| format!("while creating {}", plain.display()))?;
        self.staging
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(plain.clone(), inner);
        Ok(Some(plain))
    }

    fn publish_set(&self, id: &str, staging: &Path) -> Result<()> {
        let inner = self
            .staging
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .get(staging)
            .cloned()
            .context("publishing a set that was not begun here")?;
        for entry in
            fs::read_dir(staging).with_context(|| format!("while listing {}", staging.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{SETS}/{id}/{name}");
            let mut from = File::open(entry.path())?;
            let mut out = BufWriter::with_capacity(1 << 16, File::create(inner.join(&name))?);
            self.encrypt(&mut from, &mut out)
                .with_context(|| format!("while encrypting {key}"))?;
            out.into_inner().map_err(|e| e.into_error())?;
        }
        self.inner.publish_set(id, &inner)?;
        if let Ok(mut s) = self.staging.lock() {
            s.remove(staging);
        }
        // The plaintext written is the set's local copy: no decrypting it back.
        let cache = self.cache_dir(id);
        let _ = fs::remove_dir_all(&cache);
        fs::rename(staging, &cache)?;
        if let Ok(mut c) = self.cached.lock() {
            c.insert(id.to_owned());
        }
        Ok(())
    }

    fn abandon_set(&self, staging: &Path) {
        let inner = self.staging.lock().ok().and_then(|mut s| s.remove(staging));
        if let Some(inner) = inner {
            self.inner.abandon_set(&inner);
        }
        let _ = fs::remove_dir_all(staging);
    }

    fn check_readable(&self) -> Result<()> {
        self.need_identity()
    }

    fn set_ids(&self) -> Result<Vec<String>> {
        self.inner.set_ids()
    }

    /// The decrypted copy of the manifest (the rest comes with `fetch_set`).
    /// Without the identity an empty directory, so the set reads as damaged
    /// (a backup, which needs no identity, then reuses no earlier set).
    fn set_dir(&self, id: &str) -> Result<PathBuf> {
        let cache = self.cache_dir(id);
        if self.cached.lock().is_ok_and(|c| c.contains(id)) {
            return Ok(cache);
        }
        fs::create_dir_all(&cache)?;
        if self.identities.is_empty() {
            return Ok(cache);
        }
        let inner = self.inner.set_dir(id)?;
        for name in [MANIFEST, MANIFEST_SUM] {
            let (from, to) = (inner.join(name), cache.join(name));
            if from.exists() && !to.exists() {
                self.decrypt_file(&from, &format!("{SETS}/{id}/{name}"), &to)?;
            }
        }
        Ok(cache)
    }

    fn fetch_set(&self, id: &str) -> Result<()> {
        if self.cached.lock().is_ok_and(|c| c.contains(id)) {
            return Ok(());
        }
        self.need_identity()?;
        self.inner.fetch_set(id)?;
        let cache = self.set_dir(id)?;
        let inner = self.inner.set_dir(id)?;
        for entry in
            fs::read_dir(&inner).with_context(|| format!("while listing {}", inner.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let to = cache.join(&name);
            if name.starts_with('.') || !entry.file_type()?.is_file() || to.exists() {
                continue;
            }
            self.decrypt_file(&entry.path(), &format!("{SETS}/{id}/{name}"), &to)?;
        }
        if let Ok(mut c) = self.cached.lock() {
            c.insert(id.to_owned());
        }
        Ok(())
    }

    fn retire_set(&self, lock: &ExclusiveLock, id: &str) -> Result<()> {
        self.inner.retire_set(lock, id)
    }

    fn retired_sets(&self) -> Result<Vec<String>> {
        self.inner.retired_sets()
    }

    fn delete_retired(&self, lock: &ExclusiveLock, id: &str) -> Result<u64> {
        self.inner.delete_retired(lock, id)
    }

    fn set_aside(&self, prefix: &str) -> Result<(u64, u64)> {
        self.inner.set_aside(prefix)
    }

    /// Also the plaintext of sets not published (this run's, and the
    /// temporary directories of runs that died).
    fn remove_leftovers(&self, lock: &ExclusiveLock) -> Result<Vec<String>> {
        let removed = self.inner.remove_leftovers(lock)?;
        if let Ok(mut staging) = self.staging.lock() {
            staging.retain(|plain, inner| {
                let keep = inner.exists();
                if !keep {
                    let _ = fs::remove_dir_all(plain);
                }
                keep
            });
        }
        let parent = self.tmp.path().parent().unwrap_or(Path::new("/tmp"));
        for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(TMP_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok());
            // Signal 0 only asks whether the process is there.
            let dead = pid.is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
            });
            if dead {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(removed)
    }

    /// Writers that need no identity are a backup and a copy into this
    /// repository; every other writer (prune, forget) must read the sets.
    fn lock_exclusive(&self, operation: &str, wait: Duration) -> Result<ExclusiveLock> {
        if !(operation == "backup" || operation.starts_with("copy from ")) {
            self.need_identity()?;
        }
        let lock = self.inner.lock_exclusive(operation, wait)?;
        if !self.recipients.is_empty() && !self.check_keys()? {
            self.put_if_absent(MARKER, b"kcbackup\n")?;
        }
        Ok(lock)
    }

    fn lock_shared(&self, operation: &str, wait: Duration) -> Result<SharedLock> {
        self.need_identity()?;
        self.inner.lock_shared(operation, wait)
    }

    fn unlock_stale(&self) -> Result<Unlocked> {
        self.inner.unlock_stale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &Path) -> EncryptionSpec {
        let identity = age::x25519::Identity::generate();
        let (r, i) = (dir.join("recipients"), dir.join("identity"));
        fs::write(&r, format!("# a comment\n{}\n", identity.to_public())).unwrap();
        use age::secrecy::ExposeSecret;
        fs::write(&i, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        EncryptionSpec {
            recipients_file: Some(r),
            identity_file: Some(i),
            what: "[repositories.t]".into(),
        }
    }

    fn encrypted_local(dir: &Path) -> EncryptedStorage {
        let root = dir.join("r");
        fs::create_dir_all(root.join(SETS)).unwrap();
        let inner: Arc<dyn Storage> = Arc::new(super::super::LocalStorage::new(&root));
        EncryptedStorage::new(inner, &keys(dir)).unwrap()
    }

    #[test]
    fn the_storage_contract_holds_through_encryption() {
        use super::super::contract;
        let dir = tempfile::tempdir().unwrap();
        let s = encrypted_local(dir.path());
        contract::records_are_written_once(&s);
        contract::stat_list_and_delete(&s);
        contract::commit_says_which_keys_are_new(&s);
        contract::a_set_is_visible_only_once_published(&s);
        contract::move_aside_never_replaces(&s);
    }

    #[test]
    fn another_identity_cannot_read_and_none_is_refused_as_usage() {
        let dir = tempfile::tempdir().unwrap();
        let s = encrypted_local(dir.path());
        assert!(s.put_if_absent("drills/a.json", b"secret").unwrap());
        let other = tempfile::tempdir().unwrap();
        let spec = keys(other.path());
        let inner: Arc<dyn Storage> =
            Arc::new(super::super::LocalStorage::new(&dir.path().join("r")));
        let wrong = EncryptedStorage::new(inner.clone(), &spec).unwrap();
        // Another key pair seals names differently: the record is not even listed.
        assert!(super::super::contract::listed(&wrong, "drills").is_empty());
        let writer = EncryptedStorage::new(
            inner,
            &EncryptionSpec {
                recipients_file: Some(dir.path().join("recipients")),
                identity_file: None,
                what: "[repositories.t]".into(),
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let err = writer.get("drills/a.json").err().unwrap();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
        assert!(format!("{err:#}").contains("identity_file"), "{err:#}");
        // Once a writer marked the repository, other keys are refused.
        drop(writer.lock_exclusive("backup", Duration::ZERO).unwrap());
        let inner: Arc<dyn Storage> =
            Arc::new(super::super::LocalStorage::new(&dir.path().join("r")));
        let err = EncryptedStorage::new(inner, &keys(other.path()))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("other keys"), "{err:#}");
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
    }

    #[test]
    fn the_most_recipients_fit_the_region_and_one_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<_> = (0..=MAX_RECIPIENTS)
            .map(|_| age::x25519::Identity::generate())
            .collect();
        let write = |n: usize| {
            let r = dir.path().join(format!("r{n}"));
            let text: String = ids[..n]
                .iter()
                .map(|i| format!("{}\n", i.to_public()))
                .collect();
            fs::write(&r, text).unwrap();
            EncryptionSpec {
                recipients_file: Some(r),
                identity_file: None,
                what: "[repositories.t]".into(),
            }
        };
        let inner: Arc<dyn Storage> =
            Arc::new(super::super::LocalStorage::new(&dir.path().join("r")));
        let s = EncryptedStorage::new(inner.clone(), &write(MAX_RECIPIENTS)).unwrap();
        // The grease stanza's size is random: many headers, each must fit.
        for _ in 0..200 {
            let mut sealed = Vec::new();
            s.encrypt(&mut &b"x"[..], &mut sealed).unwrap();
            assert_eq!(plain_size(sealed.len() as u64), Some(1));
        }
        let err = EncryptedStorage::new(inner, &write(MAX_RECIPIENTS + 1))
            .err()
            .unwrap();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
    }

    #[test]
    fn sizes_round_trip_through_the_framing_and_names_through_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Storage> =
            Arc::new(super::super::LocalStorage::new(&dir.path().join("r")));
        let s = EncryptedStorage::new(inner, &keys(dir.path())).unwrap();
        for n in [0usize, 1, 65535, 65536, 65537, 200_000] {
            let data = vec![7u8; n];
            let mut sealed = Vec::new();
            s.encrypt(&mut &data[..], &mut sealed).unwrap();
            assert_eq!(plain_size(sealed.len() as u64), Some(n as u64), "{n}");
            let mut back = Vec::new();
            s.decrypt(Box::new(io::Cursor::new(sealed)), "objects/x")
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
        let key = "objects/ab/abcdef.zst";
        let stored = s.map(key).unwrap();
        assert!(stored.starts_with("objects/") && !stored.contains("abcdef"));
        assert_eq!(s.map(key).unwrap(), stored, "deterministic");
        assert_eq!(s.unmap(&stored).as_deref(), Some(key));
        assert_eq!(s.unmap("objects/zz/00"), None);
    }
}
