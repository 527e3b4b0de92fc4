//! Restoring an attachment tree from a set's index and the object store:
//! every file's checksum is verified on the way, modes, owners (as root) and
//! mtimes are put back, and with `--force` whatever the set does not hold is
//! moved aside into a quarantine folder, never deleted.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::paths::{
    apply_attributes, check_link, check_rel, create_parents, create_private, mtime_of, safe_join,
};
use crate::attachments::{EntryKind, IndexEntry};
use crate::error::{Damaged, config_error, damaged};
use crate::repo::digest::HashWriter;
use crate::repo::objects::{Encoding, ObjectStore};
use crate::walk::{Walked, Walker, cmp_paths};

/// Files waiting for a restore worker (bounds memory).
const QUEUE: usize = 64;

/// Restore workers: a few per core, as each one also waits on the disk;
/// more would only make the writes less sequential.
fn restore_workers() -> usize {
    thread::available_parallelism().map_or(2, |n| (n.get() * 2).min(8))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeRestore {
    pub target: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries the set records but that cannot be restored (sockets, devices).
    pub skipped: u64,
    /// Files moved aside because the set does not hold them (`--force`).
    pub quarantined: u64,
    pub quarantine: Option<PathBuf>,
    pub seconds: f64,
}

/// Checks every entry of a set's index before anything is written, so a
/// tampered set is refused as a whole: paths relative, plain (no `..`, `.`
/// or empty parts), strictly in walk order (so no path twice), nothing
/// below a symlink, symlinks with a target that can be created, files with
/// a checksum. Whatever capture writes passes.
pub fn check_index(index: impl Iterator<Item = Result<IndexEntry>>) -> Result<u64> {
    let mut entries = 0;
    let mut previous: Option<String> = None;
    // In walk order everything below a path comes right after it: the
    // latest link is the only one an entry could be below.
    let mut last_link: Option<String> = None;
    for entry in index {
        let entry = entry?;
        check_rel(&entry.path)?;
        if entry.path.split('/').any(|c| c.is_empty() || c == ".") {
            bail!(
                "refusing path {:?} from the set: it is not in the form backup writes",
                entry.path
            );
        }
        if let Some(prev) = &previous
            && cmp_paths(prev, &entry.path) != Ordering::Less
        {
            bail!(
                "refusing the set's index: {} comes after {prev}, out of order or twice",
                entry.path
            );
        }
        if let Some(link) = &last_link
            && entry
                .path
                .strip_prefix(link.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            bail!(
                "refusing {} from the set: it lies below the symlink {link}, so writing it \
                 would go through the link",
                entry.path
            );
        }
        match entry.kind {
            EntryKind::Symlink => {
                check_link(&entry.path, entry.target.as_deref().unwrap_or_default())?;
                last_link = Some(entry.path.clone());
            }
            EntryKind::File if entry.sha256.is_none() => {
                bail!("{}: the set's index has no checksum for it", entry.path)
            }
            _ => {}
        }
        previous = Some(entry.path);
        entries += 1;
    }
    Ok(entries)
}

/// True when `dir` exists and holds anything.
pub fn is_non_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("while reading {}", dir.display())),
    }
}

/// Refuses a non-empty target unless `force`; with `force`, moves every file
/// the set does not hold into `kcbackup-quarantine-<time>` beside the target.
/// `index` yields the set's entries in walk order.
pub fn prepare_target(
    target: &Path,
    index: impl Iterator<Item = Result<IndexEntry>>,
    force: bool,
    report: &mut TreeRestore,
) -> Result<()> {
    if !is_non_empty(target)? {
        return Ok(());
    }
    if !force {
        return config_error(format!(
            "{} is not empty; restore refuses to mix trees (use --force to move \
             what the set does not hold into a quarantine folder beside it)",
            target.display()
        ));
    }
    let mut quarantine: Option<PathBuf> = None;
    let mut index = index.peekable();
    for walked in Walker::new(target)? {
        let Walked::Entry { rel, meta } = walked? else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        // Advance the set's index to this path: both are in walk order.
        let mut held = false;
        while let Some(next) = index.peek() {
            let entry = match next {
                Ok(e) => e,
                Err(_) => {
                    index.next().transpose()?;
                    continue;
                }
            };
            match cmp_paths(&entry.path, &rel) {
                Ordering::Less => {
                    index.next();
                }
                Ordering::Equal => {
                    held = entry.kind != EntryKind::Dir;
                    break;
                }
                Ordering::Greater => break,
            }
        }
        if !held {
            let dir = match &quarantine {
                Some(dir) => dir.clone(),
                None => quarantine.insert(new_quarantine(target)?).clone(),
            };
            let to = dir.join(&rel);
            create_parents(&to)?;
            fs::rename(target.join(&rel), &to)
                .with_context(|| format!("while moving {rel} into {}", dir.display()))?;
            report.quarantined += 1;
            report.quarantine = Some(dir);
        }
    }
    Ok(())
}

/// A fresh `kcbackup-quarantine-<time>` beside `target`: never one that a
/// restore in the same second already filled, so nothing is overwritten.
pub(crate) fn new_quarantine(target: &Path) -> Result<PathBuf> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 0..1000 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let dir = parent.join(format!("kcbackup-quarantine-{stamp}{suffix}"));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("while creating {}", dir.display()));
            }
        }
    }
    bail!(
        "too many quarantine folders named kcbackup-quarantine-{stamp}-* beside {}",
        target.display()
    )
}

/// Writes every entry of `index` (checked by [`check_index`]) below
/// `target`, verifying each file's size and SHA-256 against the index while
/// it is copied. Files are copied by a few workers at once (one decodes
/// and hashes while another waits on the disk), fed through a bounded
/// queue in index order, so memory stays flat. Symlinks are created after
/// every file and directory, so no write of this restore can go through
/// one. Directories are created in index order, before anything below
/// them, owner-only first, and get their mode, owner and mtime at the end,
/// deepest first, once nothing is written into them any more.
pub fn restore_tree(
    store: &ObjectStore,
    index: impl Iterator<Item = Result<IndexEntry>>,
    target: &Path,
    report: &mut TreeRestore,
) -> Result<()> {
    let started = Instant::now();
    let as_root = nix::unistd::geteuid().is_root();
    fs::create_dir_all(target).with_context(|| format!("while creating {}", target.display()))?;
    report.target = target.to_path_buf();
    let mut dirs = Vec::new();
    let mut links = Vec::new();
    let (jobs, queue) = sync_channel::<(u64, IndexEntry, PathBuf)>(QUEUE);
    let queue = Mutex::new(queue);
    // The failure of the earliest file in index order, as a sequential
    // restore would have met it first; once set, the workers only drain.
    let failed: Mutex<Option<(u64, anyhow::Error)>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let walked = thread::scope(|scope| {
        for _ in 0..restore_workers() {
            scope.spawn(|| {
                loop {
                    let job = match queue.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, entry, path)) = job else { return };
                    if stop.load(AtomicOrdering::SeqCst) {
                        continue;
                    }
                    if let Err(e) = restore_file(store, &entry, &path, as_root) {
                        stop.store(true, AtomicOrdering::SeqCst);
                        if let Ok(mut first) = failed.lock()
                            && first.as_ref().is_none_or(|(at, _)| seq < *at)
                        {
                            *first = Some((seq, e));
                        }
                    }
                }
            });
        }
        // `jobs` moves in, so the workers see the queue close however this ends.
        let jobs = jobs;
        let mut seq = 0u64;
        for entry in index {
            crate::signals::check()?;
            if stop.load(AtomicOrdering::SeqCst) {
                break;
            }
            let entry = entry?;
            let path = safe_join(target, Path::new(&entry.path))?;
            match entry.kind {
                EntryKind::Dir => {
                    create_parents(&path)?;
                    match fs::DirBuilder::new().mode(0o700).create(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("while creating {}", path.display()));
                        }
                    }
                    dirs.push((path, entry));
                    report.dirs += 1;
                }
                EntryKind::File => {
                    report.files += 1;
                    report.bytes += entry.size;
                    seq += 1;
                    jobs.send((seq, entry, path))
                        .map_err(|_| anyhow::anyhow!("the attachment writers stopped early"))?;
                }
                EntryKind::Symlink => {
                    check_link(&entry.path, entry.target.as_deref().unwrap_or_default())?;
                    links.push(entry);
                }
                EntryKind::Other => report.skipped += 1,
            }
        }
        Ok::<(), anyhow::Error>(())
    });
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    match (walked, failed) {
        // A signal stopped the walk: that is the reason to give.
        (Err(e), _) if crate::signals::received().is_some() => return Err(e),
        (_, Some((_, e))) => return Err(e),
        (walked, None) => walked?,
    }
    for entry in &links {
        crate::signals::check()?;
        // Checked again now that earlier links exist: a link's parents must
        // be real directories.
        let path = safe_join(target, Path::new(&entry.path))?;
        create_parents(&path)?;
        // Only what the target already had (`--force`) is replaced: a file,
        // a link or an emptied directory.
        let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir(&path));
        let link = entry.target.as_deref().unwrap_or_default();
        std::os::unix::fs::symlink(link, &path)
            .with_context(|| format!("while creating the symlink {}", path.display()))?;
        if as_root {
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))?;
        }
        report.symlinks += 1;
    }
    for (path, entry) in dirs.iter().rev() {
        set_dir_meta(path, entry, as_root)
            .with_context(|| format!("while restoring the attributes of {}", path.display()))?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// Mode, owner (as root) and mtime of a restored directory.
pub fn set_dir_meta(path: &Path, entry: &IndexEntry, as_root: bool) -> Result<()> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(entry.uid), Some(entry.gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))?;
    let dir = File::open(path)?;
    dir.set_modified(mtime_of(entry))?;
    Ok(())
}

/// A reader of a stored object whose read errors say the set is damaged.
struct DamageOnRead<R>(R);

impl<R: io::Read> io::Read for DamageOnRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(Damaged(format!("while reading the stored object: {e}"))))
    }
}

/// Copies one object out through a temporary name, checking it on the way;
/// a mismatch stops the restore naming the path.
fn restore_file(store: &ObjectStore, entry: &IndexEntry, path: &Path, as_root: bool) -> Result<()> {
    let Some(sha256) = &entry.sha256 else {
        bail!("{}: the index has no checksum for it", entry.path);
    };
    let encoding = entry.stored.unwrap_or(Encoding::Raw);
    create_parents(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".kcbackup-restore-{name}"));
    let _ = fs::remove_file(&tmp);
    let file = create_private(&tmp)?;
    let mut out = HashWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
    // The object's faults (missing, undecodable, another content) are the
    // set's damage; the target's are not.
    let copied = store
        .reader(sha256, encoding)
        .map_err(|e| anyhow::Error::new(Damaged::from(e)))
        .and_then(|r| io::copy(&mut DamageOnRead(r), &mut out).map_err(Into::into));
    let (buf, bytes, actual) = out.finish();
    let file = buf.into_inner().map_err(|e| e.into_error());
    let checked = copied.and_then(|_| {
        if bytes != entry.size || &actual != sha256 {
            return damaged(format!(
                "{}: the restored data does not match the set (size {bytes} vs {}, sha256 {actual} vs {sha256})",
                entry.path,
                entry.size
            ));
        }
        Ok(())
    });
    let placed = checked.and_then(|()| {
        let file: File = file?;
        apply_attributes(&file, entry, as_root)?;
        drop(file);
        fs::rename(&tmp, path).with_context(|| format!("while placing {}", path.display()))
    });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("while restoring {}", entry.path)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, target: Option<&str>) -> Result<IndexEntry> {
        Ok(IndexEntry {
            path: path.into(),
            kind,
            size: 0,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            sha256: (kind == EntryKind::File).then(|| "e3b0".into()),
            stored: None,
            stored_bytes: None,
            target: target.map(str::to_string),
            etag: None,
            version_id: None,
        })
    }

    fn check(entries: Vec<Result<IndexEntry>>) -> Result<u64> {
        check_index(entries.into_iter())
    }

    #[test]
    fn links_may_point_anywhere_but_nothing_may_lie_below_one() {
        use EntryKind::*;
        let fine = vec![
            entry("3", Dir, Some("/srv/disk2/3")),
            entry("3/0", Dir, None),
            entry("3/0/3", File, None),
            entry("9", Dir, None),
            entry("9/abs", Symlink, Some("/etc")),
            entry("9/abs-sibling", File, None),
            entry("9/rel", Symlink, Some("../../1")),
            entry("9/z", File, None),
        ];
        assert_eq!(check(fine).unwrap(), 8);
        let below = vec![
            entry("9", Dir, None),
            entry("9/abs", Symlink, Some("/etc")),
            entry("9/abs/cron.d", Dir, None),
        ];
        let err = check(below).unwrap_err().to_string();
        assert!(err.contains("below the symlink 9/abs"), "{err}");
    }

    #[test]
    fn an_index_out_of_order_twice_or_oddly_spelled_is_refused() {
        use EntryKind::*;
        let twice = vec![entry("9/x", Symlink, Some("/etc")), entry("9/x", Dir, None)];
        assert!(
            check(twice)
                .unwrap_err()
                .to_string()
                .contains("out of order or twice")
        );
        let backwards = vec![entry("9/y", File, None), entry("9/x", File, None)];
        assert!(check(backwards).is_err());
        // `9/./x/f` would slip past a prefix test on the link `9/x`.
        for odd in ["9/./x/f", "9//x", "9/x/"] {
            assert!(check(vec![entry(odd, File, None)]).is_err(), "{odd}");
        }
        assert!(check(vec![entry("9/x", Symlink, Some(""))]).is_err());
    }
}
