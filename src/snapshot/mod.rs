//! Filesystem snapshots of the attachment store, taken right after the dump's
//! transaction begins, so files deleted while they are copied are still there.
//! One guard, [`Snapshot`], for none / btrfs / lvm; it always releases.

mod btrfs;
pub mod detect;
mod exec;
mod lvm;
mod mounts;

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::settings::{Settings, SnapshotMethod};
pub use detect::{plan, plan_none};

/// Every snapshot, snapshot mount point and btrfs snapshot directory
/// (with a leading dot) is named `kcbackup-snap-<set id>`.
pub const PREFIX: &str = "kcbackup-snap-";
/// Held while a snapshot exists, so one run never takes another's for stale.
const LOCK_FILE: &str = "kcbackup-snap.lock";

/// The method actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    None,
    Btrfs,
    Lvm,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Btrfs => "btrfs",
            Method::Lvm => "lvm",
        }
    }
}

/// What to snapshot, from the settings and the command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: SnapshotMethod,
    pub attachment_path: PathBuf,
    /// Mapped into the snapshot too when it is on the same volume.
    pub config_dir: Option<PathBuf>,
    /// `[snapshot] lvm_size` in bytes; `None` = min(VG free, 20% of origin, 15 GiB).
    pub lvm_size: Option<u64>,
    /// Where LVM snapshots are mounted (a new 0700 directory per snapshot)
    /// and the lock file lives: `/run/kcbackup` for root, else the temp dir.
    pub mount_base: PathBuf,
}

impl Request {
    pub fn new(method: SnapshotMethod, attachment_path: impl Into<PathBuf>) -> Request {
        Request {
            method,
            attachment_path: attachment_path.into(),
            config_dir: None,
            lvm_size: None,
            mount_base: default_mount_base(),
        }
    }

    /// The request for a backup with these settings.
    pub fn from_settings(s: &Settings) -> Request {
        Request {
            config_dir: Some(s.config_dir.clone()),
            lvm_size: s.snapshot_lvm_size,
            ..Request::new(s.snapshot, &s.attachment_path)
        }
    }
}

/// `/run` is cleared at boot and no tmp cleaner walks it; and unlike `$TMPDIR`
/// it is the same for every run, so the lock there is host-wide.
fn default_mount_base() -> PathBuf {
    if nix::unistd::geteuid().is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/kcbackup")
    } else {
        std::env::temp_dir()
    }
}

/// A configured path inside the snapshotted volume and its place in the snapshot.
#[derive(Debug, Clone)]
struct Root {
    given: PathBuf,
    canonical: PathBuf,
    rel: PathBuf,
}

#[derive(Debug, Clone)]
enum Target {
    None,
    Btrfs(btrfs::Target),
    Lvm(lvm::Target),
}

/// The resolved method and what it will snapshot.
#[derive(Debug, Clone)]
pub struct Plan {
    pub method: Method,
    /// The attachment path, canonical.
    pub source: PathBuf,
    /// One line for the output: what will be snapshotted, or why nothing.
    pub note: String,
    /// Configured paths outside the snapshotted volume: copied live.
    pub uncovered: Vec<PathBuf>,
    target: Target,
    roots: Vec<Root>,
    mount_base: PathBuf,
}

enum Held {
    Nothing,
    Btrfs(PathBuf),
    Lvm(lvm::Held),
}

/// A snapshot that exists until [`Snapshot::release`] (or drop, best effort).
pub struct Snapshot {
    method: Method,
    name: String,
    taken_at: DateTime<Utc>,
    /// Where the snapshot's filesystem (btrfs: its subvolume) is visible.
    view_root: PathBuf,
    roots: Vec<Root>,
    held: Held,
    _lock: Option<File>,
}

/// The snapshot as recorded in the manifest and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub method: Method,
    pub name: Option<String>,
    pub transaction_started: Option<DateTime<Utc>>,
    pub taken_at: Option<DateTime<Utc>>,
    /// Consistency window: from the dump's transaction to the snapshot.
    pub window_ms: Option<i64>,
    /// LVM only: how full the copy-on-write area (thin: the pool) was.
    pub fill_percent: Option<f64>,
}

/// Takes the planned snapshot, named `kcbackup-snap-<set_id>`.
///
/// The backup's order: [`plan`] (resolves `auto`; print [`Plan::note`] once),
/// [`remove_stale`] under the repository lock, `take` from the dump's
/// `on_transaction_open`, copy from [`Snapshot::view_path`], then
/// [`Snapshot::info`] (fails if an LVM snapshot overflowed), [`Snapshot::release`].
pub fn take(plan: &Plan, set_id: &str) -> Result<Snapshot> {
    if set_id.is_empty()
        || !set_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
    {
        bail!("set id {set_id:?} cannot be part of a snapshot name");
    }
    let name = format!("{PREFIX}{set_id}");
    let mut snap = Snapshot {
        method: plan.method,
        name,
        taken_at: Utc::now(),
        view_root: PathBuf::new(),
        roots: plan.roots.clone(),
        held: Held::Nothing,
        _lock: None,
    };
    match &plan.target {
        Target::None => {}
        Target::Btrfs(t) => {
            snap._lock = Some(host_lock(&plan.mount_base)?);
            let path = btrfs::create(t, &snap.name)?;
            snap.taken_at = Utc::now();
            snap.view_root = path.clone();
            snap.held = Held::Btrfs(path);
        }
        Target::Lvm(t) => {
            snap._lock = Some(host_lock(&plan.mount_base)?);
            snap.held = Held::Lvm(lvm::create(t, &snap.name)?);
            snap.taken_at = Utc::now();
            // From here on, an error drops `snap`, which removes the LV.
            if let Held::Lvm(held) = &mut snap.held {
                snap.view_root = lvm::mount(held, t, &plan.mount_base)?;
            }
        }
    }
    tracing::info!("{} snapshot {} taken", snap.method.as_str(), snap.name);
    Ok(snap)
}

/// Removes what a crashed earlier run left: mounts, mount points, btrfs and
/// LVM snapshots named `kcbackup-snap-*` (never anything else). Returns their names.
pub fn remove_stale(plan: &Plan) -> Result<Vec<String>> {
    let _lock = match (host_lock(&plan.mount_base), &plan.target) {
        (Ok(lock), _) => lock,
        // Without a snapshot of its own, this run just leaves others' alone.
        (Err(_), Target::None) => return Ok(Vec::new()),
        (Err(e), _) => return Err(e),
    };
    let mut removed = Vec::new();
    for dir in mounts::mount_points_named(PREFIX)? {
        mounts::unmount(&dir).context("while removing a stale snapshot mount")?;
        removed.push(dir.display().to_string());
        // Its private directory, wherever that run's mount base was.
        if let Some(private) = dir.parent().filter(|_| dir.ends_with(mounts::MOUNT_DIR))
            && mounts::remove_mount_dirs(private).is_ok()
        {
            removed.push(private.display().to_string());
        }
    }
    if let Ok(entries) = fs::read_dir(&plan.mount_base) {
        for entry in entries.flatten() {
            let is_ours = entry.file_name().to_string_lossy().starts_with(PREFIX);
            if is_ours && entry.path().is_dir() && mounts::remove_mount_dirs(&entry.path()).is_ok()
            {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    match &plan.target {
        Target::None => {}
        Target::Btrfs(t) => {
            for path in btrfs::stale(t)? {
                btrfs::delete(&path).context(STALE)?;
                removed.push(path.display().to_string());
            }
        }
        Target::Lvm(t) => {
            for name in lvm::stale(&t.vg)? {
                lvm::remove(&t.vg, &name).context(STALE)?;
                removed.push(format!("{}/{name}", t.vg));
            }
        }
    }
    for r in &removed {
        tracing::warn!("removed {r}, a snapshot left by an earlier run that did not finish");
    }
    Ok(removed)
}

const STALE: &str = "while removing a snapshot left by an earlier run";

/// An exclusive lock on `<base>/kcbackup-snap.lock`, failing at once if held.
fn host_lock(base: &Path) -> Result<File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .with_context(|| format!("while creating {}", base.display()))?;
    let path = base.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("while opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another kcbackup run holds a snapshot (lock {}); wait until it finishes",
            path.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("while locking {}", path.display()))
        }
    }
}

impl Snapshot {
    pub fn method(&self) -> Method {
        self.method
    }

    /// `kcbackup-snap-<set id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the snapshot was created (just after the creating command returned).
    pub fn taken_at(&self) -> DateTime<Utc> {
        self.taken_at
    }

    /// Where `original` (under attachment_path or a covered config_dir) is
    /// to be read from; itself when it is not covered or the method is none.
    pub fn view_path(&self, original: &Path) -> PathBuf {
        let best = self
            .roots
            .iter()
            .flat_map(|r| [(&r.given, r), (&r.canonical, r)])
            .filter(|(prefix, _)| original.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.components().count());
        match best {
            Some((prefix, r)) => {
                let below = original.strip_prefix(prefix).unwrap_or(Path::new(""));
                self.view_root.join(&r.rel).join(below)
            }
            None => original.to_path_buf(),
        }
    }

    /// Whether `original` is read from the snapshot (false: copied live).
    pub fn covers(&self, original: &Path) -> bool {
        self.view_path(original) != original
    }

    /// LVM: fill level of the copy-on-write area (thin: of the pool), in
    /// percent; an error when it overflowed. Other methods: `None`.
    pub fn fill_percent(&self) -> Result<Option<f64>> {
        match &self.held {
            Held::Lvm(held) => lvm::fill(held),
            _ => Ok(None),
        }
    }

    /// The manifest record; fails when the snapshot overflowed, so call it
    /// after the copy and before [`Snapshot::release`].
    pub fn info(&self, transaction_started: Option<DateTime<Utc>>) -> Result<SnapshotInfo> {
        let fill_percent = self.fill_percent()?;
        if self.method == Method::None {
            return Ok(SnapshotInfo::none(transaction_started));
        }
        Ok(SnapshotInfo {
            method: self.method,
            name: Some(self.name.clone()),
            transaction_started,
            taken_at: Some(self.taken_at),
            window_ms: transaction_started.map(|t| (self.taken_at - t).num_milliseconds()),
            fill_percent,
        })
    }

    /// Unmounts and removes the snapshot. Its error says what is left behind;
    /// the next run's [`remove_stale`] removes it.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let result = match &mut self.held {
            Held::Nothing => Ok(()),
            Held::Btrfs(path) => btrfs::delete(path),
            Held::Lvm(held) => lvm::release(held),
        };
        let result = result.with_context(|| {
            format!(
                "snapshot {} was not fully removed; the next run removes it",
                self.name
            )
        });
        if result.is_ok() && !matches!(self.held, Held::Nothing) {
            tracing::info!("snapshot {} released", self.name);
        }
        self.held = Held::Nothing;
        result
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if matches!(self.held, Held::Nothing) {
            return;
        }
        if let Err(e) = self.release_inner() {
            tracing::error!("{e:#}");
        }
    }
}

impl SnapshotInfo {
    /// No snapshot was used: attachments were copied from the live tree.
    pub fn none(transaction_started: Option<DateTime<Utc>>) -> SnapshotInfo {
        SnapshotInfo {
            method: Method::None,
            name: None,
            transaction_started,
            taken_at: None,
            window_ms: None,
            fill_percent: None,
        }
    }
}

#[cfg(test)]
mod tests;
