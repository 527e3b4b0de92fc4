//! Restoring the objects of an s3 set: each one streamed out of the
//! repository with its checksum verified before its last byte is handed on,
//! and written as a file named by its key (for inspection, and for a drill
//! without a scratch bucket). Keys are hostile input: none leads a write
//! out of the target directory.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::files::{TreeRestore, is_non_empty, new_quarantine};
use super::paths::{create_parents, create_private, mtime_of, safe_join};
use crate::attachments::{EntryKind, IndexEntry};
use crate::error::{Damaged, config_error};
use crate::repo::objects::{Encoding, ObjectStore};

/// The longest key S3 allows, in bytes.
const MAX_KEY: usize = 1024;

/// The rules for one entry of an s3 set's index, before anything is
/// written: an object (kind file) with a checksum, a key S3 can hold (not
/// empty, at most 1024 bytes, no NUL), and keys strictly ascending in byte
/// order, the order a listing returns, so no key comes twice.
pub fn check_entry(previous: Option<&str>, entry: &IndexEntry) -> Result<()> {
    let key = &entry.path;
    if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
        bail!("refusing key {key:?} from the set: S3 cannot hold it");
    }
    if entry.kind != EntryKind::File {
        bail!("refusing key {key:?} from the set: an s3 set holds objects only");
    }
    if entry.sha256.is_none() {
        bail!("{key}: the set's index has no checksum for it");
    }
    if let Some(prev) = previous
        && prev.as_bytes() >= key.as_bytes()
    {
        bail!("refusing the set's index: key {key:?} comes after {prev:?}, out of order or twice");
    }
    Ok(())
}

/// Checks a whole s3 index with [`check_entry`]; the number of objects.
pub fn check_index(index: impl Iterator<Item = Result<IndexEntry>>) -> Result<u64> {
    let mut previous: Option<String> = None;
    let mut count = 0;
    for entry in index {
        let entry = entry?;
        check_entry(previous.as_deref(), &entry)?;
        previous = Some(entry.path);
        count += 1;
    }
    Ok(count)
}

/// The file a key is written to, relative to the target directory: the key
/// split at `/`, empty parts dropped (a leading `/`, as Kopano's default
/// path gives, or `//`). `None` for a key that cannot be a file name
/// inside the target: one with a `.` or `..` part, or nothing but slashes.
/// Two keys that differ only in slashes name the same file; the restore
/// refuses the second.
pub fn key_path(key: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in key.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    // Belt and braces: what is pushed is plain names only.
    let plain = out.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && out.components().next().is_some()).then_some(out)
}

/// An object's bytes out of the repository, hashed on the way: the read
/// that would hand on its last byte fails instead when the size or the
/// SHA-256 differs from the set's, so a receiver that stops at the
/// announced length (an HTTP upload) never gets a whole wrong object.
/// Its failures are the set's damage.
pub struct Checked {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    left: u64,
    size: u64,
    want: String,
    key: String,
    checked: bool,
}

impl Checked {
    /// Opens the object of `entry` (checked by [`check_entry`]).
    pub fn open(store: &ObjectStore, entry: &IndexEntry) -> Result<Checked> {
        let Some(sha) = entry.sha256.clone() else {
            bail!("{}: the set's index has no checksum for it", entry.path);
        };
        let inner = store
            .reader(&sha, entry.stored.unwrap_or(Encoding::Raw))
            .map_err(|e| anyhow::Error::new(Damaged(format!("{}: {e:#}", entry.path))))?;
        Ok(Checked {
            inner,
            hasher: Sha256::new(),
            left: entry.size,
            size: entry.size,
            want: sha,
            key: entry.path.clone(),
            checked: false,
        })
    }

    /// The object's size as the set records it (what an upload announces).
    pub fn size(&self) -> u64 {
        self.size
    }

    fn damage(&self, what: String) -> io::Error {
        io::Error::other(Damaged(format!(
            "{}: the stored object does not match the set: {what}",
            self.key
        )))
    }

    fn verdict(&mut self) -> io::Result<()> {
        self.checked = true;
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if got != self.want {
            return Err(self.damage(format!("sha256 {got}, the set records {}", self.want)));
        }
        Ok(())
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.checked {
                self.verdict()?;
            }
            return Ok(0);
        }
        let cap = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap]).map_err(|e| {
            io::Error::other(Damaged(format!(
                "{}: while reading the stored object: {e}",
                self.key
            )))
        })?;
        if n == 0 && cap > 0 {
            return Err(self.damage(format!(
                "it ends after {} bytes, the set records {}",
                self.size - self.left,
                self.size
            )));
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        if self.left == 0 {
            // Withhold the last bytes of a wrong object.
            self.verdict()?;
        }
        Ok(n)
    }
}

/// Refuses a non-empty directory unless `force`; with `force`, moves
/// everything in it into a new `kcbackup-quarantine-<time>` beside it
/// (keys do not map one to one onto paths, so nothing stays in place).
pub fn prepare_dir(dir: &Path, force: bool, report: &mut TreeRestore) -> Result<()> {
    if !is_non_empty(dir)? {
        return Ok(());
    }
    if !force {
        return config_error(format!(
            "{} is not empty; restore refuses to mix trees (use --force to move \
             what it holds into a quarantine folder beside it)",
            dir.display()
        ));
    }
    let quarantine = new_quarantine(dir)?;
    for entry in fs::read_dir(dir).with_context(|| format!("while reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("while reading {}", dir.display()))?;
        fs::rename(entry.path(), quarantine.join(entry.file_name())).with_context(|| {
            format!(
                "while moving {} into {}",
                entry.path().display(),
                quarantine.display()
            )
        })?;
        report.quarantined += 1;
    }
    report.quarantine = Some(quarantine);
    Ok(())
}

/// Writes every object of an s3 index (checked by [`check_index`]) below
/// `dir` as a file named by its key ([`key_path`]), owner-only, with the
/// object's last-modified time. A key that cannot be a file name there is
/// skipped and counted; `dir` must be empty ([`prepare_dir`]).
pub fn restore_to_dir(
    store: &ObjectStore,
    index: impl Iterator<Item = Result<IndexEntry>>,
    dir: &Path,
    report: &mut TreeRestore,
) -> Result<()> {
    let started = Instant::now();
    fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    report.target = dir.to_path_buf();
    for (n, entry) in index.enumerate() {
        crate::signals::check()?;
        let entry = entry?;
        let Some(rel) = key_path(&entry.path) else {
            tracing::warn!(
                "key {:?} cannot be a file name inside {}; not written",
                entry.path,
                dir.display()
            );
            report.skipped += 1;
            continue;
        };
        write_object(store, &entry, dir, &rel, n)
            .with_context(|| format!("while restoring the object {:?}", entry.path))?;
        report.files += 1;
        report.bytes += entry.size;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// One object to `dir/rel`, through a temporary name created exclusively
/// (a key that took it already fails the restore rather than being
/// overwritten), placed with a rename that never replaces: a second key
/// naming the same file is refused, not written over the first.
fn write_object(
    store: &ObjectStore,
    entry: &IndexEntry,
    dir: &Path,
    rel: &Path,
    n: usize,
) -> Result<()> {
    let path = safe_join(dir, rel)?;
    create_parents(&path).with_context(|| {
        format!(
            "while creating the directories of {} (a key names it as a file)",
            path.display()
        )
    })?;
    let tmp = path.with_file_name(format!(".kcbackup-restore-{}-{n}", std::process::id()));
    let mut file = create_private(&tmp)?;
    let copied = Checked::open(store, entry).and_then(|mut object| {
        let mut out = io::BufWriter::with_capacity(256 * 1024, &mut file);
        io::copy(&mut object, &mut out)?;
        io::Write::flush(&mut out)?;
        Ok(())
    });
    let placed = copied.and_then(|()| {
        file.set_modified(mtime_of(entry))?;
        drop(file);
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            &path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            nix::errno::Errno::EEXIST => anyhow::anyhow!(
                "{} was already written for another key of the set (keys that differ only \
                 in slashes name the same file)",
                path.display()
            ),
            e => anyhow::Error::new(e).context(format!("while placing {}", path.display())),
        })
    });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_map_to_plain_names_inside_the_target() {
        let p = |k| key_path(k).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(
            p("/var/lib/kopano/attachments/12").as_deref(),
            Some("var/lib/kopano/attachments/12")
        );
        assert_eq!(p("a//b/").as_deref(), Some("a/b"));
        for hostile in ["/", "", "../x", "a/../../etc/passwd", "/./x", "a/.."] {
            assert_eq!(p(hostile), None, "{hostile}");
        }
    }

    fn object(key: &str) -> IndexEntry {
        IndexEntry {
            path: key.into(),
            kind: EntryKind::File,
            size: 1,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            sha256: Some("00".into()),
            stored: None,
            stored_bytes: None,
            target: None,
            etag: None,
            version_id: None,
        }
    }

    /// A real object store holding `data` under each key of `keys`.
    fn stored(data: &[u8], keys: &[&str]) -> (tempfile::TempDir, ObjectStore, Vec<IndexEntry>) {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let (info, _) = store.put(&mut &data[..], Encoding::Zst).unwrap();
        let entries = keys
            .iter()
            .map(|k| IndexEntry {
                size: data.len() as u64,
                sha256: Some(info.sha256.clone()),
                stored: Some(Encoding::Zst),
                mtime: 1_700_000_000,
                ..object(k)
            })
            .collect();
        (dir, store, entries)
    }

    #[test]
    fn a_checked_read_withholds_the_last_bytes_of_a_wrong_object() {
        let data = b"attachment data ".repeat(4096);
        let (_dir, store, entries) = stored(&data, &["/a/1"]);
        let mut good = Vec::new();
        io::copy(&mut Checked::open(&store, &entries[0]).unwrap(), &mut good).unwrap();
        assert_eq!(good, data);
        // A stored object that no longer hashes to its name (one bit
        // flipped on disk, raw so it still decodes), and one shorter than
        // recorded: the read that would end it fails, so a receiver that
        // stops at the announced length never has all of it.
        let (_raw_dir, raw, _) = stored(b"", &[]);
        let (info, _) = raw.put(&mut &data[..], Encoding::Raw).unwrap();
        let path = raw.path(&info.sha256, Encoding::Raw);
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let flipped = IndexEntry {
            stored: Some(Encoding::Raw),
            sha256: Some(info.sha256.clone()),
            ..entries[0].clone()
        };
        let longer = IndexEntry {
            size: data.len() as u64 + 1,
            ..entries[0].clone()
        };
        for (bad, store) in [(&flipped, &raw), (&longer, &store)] {
            let mut out = Vec::new();
            let err = io::copy(&mut Checked::open(store, bad).unwrap(), &mut out).unwrap_err();
            assert!(
                (out.len() as u64) < bad.size,
                "{} bytes handed on",
                out.len()
            );
            let damaged = err.get_ref().and_then(|e| e.downcast_ref::<Damaged>());
            assert!(damaged.is_some(), "{err}");
        }
        // A missing object is the set's damage too.
        let missing = IndexEntry {
            sha256: Some(crate::repo::digest::sha256_hex(b"other")),
            ..entries[0].clone()
        };
        let err = Checked::open(&store, &missing).err().unwrap();
        assert!(err.is::<Damaged>(), "{err:#}");
    }

    #[test]
    fn objects_land_as_files_by_key_and_hostile_keys_stay_inside() {
        let data = b"payload".to_vec();
        let keys = [
            "../../escape",
            "/var/lib/kopano/attachments/1",
            "/var/lib/kopano/attachments/2",
            "a/../../../escape2",
            "var/lib/kopano/attachments/1",
        ];
        let (_dir, store, entries) = stored(&data, &keys);
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("inspect");
        let mut report = TreeRestore::default();
        let err = restore_to_dir(
            &store,
            entries.clone().into_iter().map(Ok),
            &target,
            &mut report,
        )
        .unwrap_err();
        // The bare twin of a key with a leading `/` names the same file:
        // refused, the first one kept.
        assert!(
            format!("{err:#}").contains("already written for another key"),
            "{err:#}"
        );
        assert_eq!(report.skipped, 2);
        assert_eq!(report.files, 2);
        let file = target.join("var/lib/kopano/attachments/1");
        assert_eq!(fs::read(&file).unwrap(), data);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for escaped in ["escape", "escape2", "../escape"] {
            assert!(!outside.path().join(escaped).exists(), "{escaped}");
        }
        let names: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("inspect")]);
        // Nothing under a temporary name is left.
        let dir = target.join("var/lib/kopano/attachments");
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_with_force_moved_aside_whole() {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("t");
        fs::create_dir_all(target.join("sub")).unwrap();
        fs::write(target.join("sub/old"), b"old").unwrap();
        let mut report = TreeRestore::default();
        let err = prepare_dir(&target, false, &mut report).unwrap_err();
        assert!(err.is::<crate::error::ConfigError>(), "{err:#}");
        prepare_dir(&target, true, &mut report).unwrap();
        assert!(!is_non_empty(&target).unwrap());
        let q = report.quarantine.unwrap();
        assert_eq!(fs::read(q.join("sub/old")).unwrap(), b"old");
    }

    #[test]
    fn an_index_of_keys_in_listing_order_passes_and_nothing_else() {
        let fine = ["/a/1", "/a/10", "/a/2", "a/1", "b"].map(object);
        assert_eq!(check_index(fine.into_iter().map(Ok)).unwrap(), 5);
        let twice = ["/a/1", "/a/1"].map(object);
        assert!(check_index(twice.into_iter().map(Ok)).is_err());
        let backwards = ["b", "a"].map(object);
        assert!(check_index(backwards.into_iter().map(Ok)).is_err());
        let mut dir = object("d/");
        dir.kind = EntryKind::Dir;
        assert!(check_entry(None, &dir).is_err());
        assert!(check_entry(None, &object("a\0b")).is_err());
        assert!(check_entry(None, &object(&"k".repeat(1025))).is_err());
    }
}
