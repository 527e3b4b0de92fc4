//! `kcbackup copy SET|latest|--all --to NAME`: sets from the repository in
//! use into another one (local or S3, either way). Only objects the target
//! lacks are sent; the target's set is published only once all of it is
//! stored there, so a killed copy leaves nothing that looks complete and
//! the next copy sends only what had not landed.
//!
//! For tests only: `KCBACKUP_TEST_PAUSE_AT=<point>` (one of
//! [`PAUSE_POINTS`]) makes the run stop itself there, as prune does.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::{Damaged, config_error};
use crate::repo::contents::referenced_objects;
use crate::repo::storage::CENSUSES;
use crate::repo::transfer::{self, ObjectsMoved};
use crate::repo::{Repository, SetInfo};
use crate::settings::Settings;
use crate::signals;

/// Every point, in the order a run passes them (per set, from `objects-first`).
pub const PAUSE_POINTS: &[&str] = &[
    "copy-locked",
    "copy-objects-first",
    "copy-objects-half",
    "copy-objects-done",
    "copy-set-staged",
    "copy-published",
];

/// What to copy.
#[derive(Debug, Clone)]
pub enum Which {
    /// One set: an id or `latest`.
    One(String),
    /// Every published set with a readable manifest, oldest first.
    All,
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub which: Which,
    /// The target: a repository name, directory or URL.
    pub to: String,
    pub lock_wait: Duration,
}

/// What happened to one set.
#[derive(Debug, Clone, Serialize)]
pub struct SetCopy {
    pub set: String,
    /// `copied`, `present` (the target had it already) or `failed`.
    pub outcome: &'static str,
    pub objects: ObjectsMoved,
    /// Bytes of the set's own files (dump, indexes, manifest) sent.
    pub file_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub sets: Vec<SetCopy>,
    pub objects_sent: u64,
    pub objects_present: u64,
    /// Every byte sent to the target (objects and set files).
    pub bytes_sent: u64,
    pub removed_leftovers: Vec<String>,
    pub seconds: f64,
}

impl CopyReport {
    /// Whether a set could not be copied (exit 3).
    pub fn failed(&self) -> bool {
        self.sets.iter().any(|s| s.outcome == "failed")
    }
}

pub fn run(settings: &Settings, opts: &CopyOptions) -> Result<CopyReport> {
    signals::install()?;
    let clock = Instant::now();
    let (_, target_spec) = settings.repositories.resolve(&opts.to)?;
    if target_spec.same_place(&settings.repository) {
        return config_error(format!(
            "copy --to {}: that is the repository the sets come from",
            opts.to
        ));
    }
    let parallel = target_spec
        .s3()
        .or(settings.repository.s3())
        .map_or(2, |s| s.parallel);
    let source = Repository::open_at(&settings.repository)?;
    let mut shared = source.lock_shared_waiting("copy", opts.lock_wait)?;
    let target = Repository::open_or_create_at(&target_spec)
        .with_context(|| format!("while opening the target repository {target_spec}"))?;
    let lock = target
        .lock_exclusive_waiting(&format!("copy from {}", source.location()), opts.lock_wait)?;
    let removed_leftovers = target.remove_leftovers(&lock)?;
    pause_at("copy-locked");

    let sets: Vec<SetInfo> = match &opts.which {
        Which::One(spec) => vec![source.resolve(spec)?],
        Which::All => source.sets()?,
    };
    let there: std::collections::BTreeSet<String> =
        target.sets()?.into_iter().map(|s| s.id).collect();
    let from_objects = source.objects()?;
    let to_objects = target.objects()?;
    let mut report = CopyReport {
        from: source.location().to_owned(),
        to: target.location().to_owned(),
        sets: Vec::new(),
        objects_sent: 0,
        objects_present: 0,
        bytes_sent: 0,
        removed_leftovers,
        seconds: 0.0,
    };
    let ends = Ends {
        source: &source,
        target: &target,
        lock: &lock,
        from: &from_objects,
        to: &to_objects,
        parallel,
    };
    for set in &sets {
        signals::check()?;
        shared.describe(&format!("copy of set {}", set.id));
        let mut line = SetCopy {
            set: set.id.clone(),
            outcome: "copied",
            objects: ObjectsMoved::default(),
            file_bytes: 0,
            error: None,
        };
        let result = if there.contains(&set.id) {
            same_set(&source, &target, set).map(|()| line.outcome = "present")
        } else {
            copy_one(&ends, set, &mut line)
        };
        if let Err(e) = result {
            // Damage in the source fails this set only; anything else
            // (the target unreachable, a signal) fails the run.
            if e.downcast_ref::<Damaged>().is_none() {
                return Err(e.context(format!("while copying set {}", set.id)));
            }
            line.outcome = "failed";
            line.error = Some(format!("{e:#}"));
        }
        report.objects_sent += line.objects.sent;
        report.objects_present += line.objects.present;
        report.bytes_sent += line.objects.bytes + line.file_bytes;
        report.sets.push(line);
    }
    report.seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// A set of the same id in the target must be the same set.
fn same_set(source: &Repository, target: &Repository, set: &SetInfo) -> Result<()> {
    let theirs = target.resolve(&set.id)?;
    let (a, b) = (
        transfer::manifest_sha(set)?,
        transfer::manifest_sha(&theirs)?,
    );
    if a != b {
        return Err(Damaged(format!(
            "{} already holds a different set {} (its manifest differs from the one in {})",
            target.location(),
            set.id,
            source.location()
        ))
        .into());
    }
    Ok(())
}

/// The two ends of a copy run.
struct Ends<'a> {
    source: &'a Repository,
    target: &'a Repository,
    lock: &'a crate::repo::ExclusiveLock,
    from: &'a crate::repo::ObjectStore,
    to: &'a crate::repo::ObjectStore,
    parallel: usize,
}

fn copy_one(ends: &Ends<'_>, set: &SetInfo, line: &mut SetCopy) -> Result<()> {
    let manifest = match &set.manifest {
        Ok(m) => m,
        Err(e) => {
            return Err(Damaged(format!("set {} is damaged in the source: {e}", set.id)).into());
        }
    };
    let refs = referenced_objects(set.local_dir(), manifest).map_err(Damaged::from)?;
    let total = refs.len() as u64;
    let done = AtomicU64::new(0);
    let first = AtomicBool::new(false);
    let half = AtomicBool::new(false);
    line.objects = transfer::copy_objects(ends.from, ends.to, &refs, ends.parallel, &|n, _| {
        let now = done.fetch_add(n, Ordering::SeqCst) + n;
        if !first.swap(true, Ordering::SeqCst) {
            pause_at("copy-objects-first");
        }
        if now * 2 >= total && !half.swap(true, Ordering::SeqCst) {
            pause_at("copy-objects-half");
        }
    })?;
    pause_at("copy-objects-done");
    let Some(work) = ends.target.begin_copy(ends.lock, &set.id)? else {
        anyhow::bail!(
            "set {} appeared in {} while it was copied",
            set.id,
            ends.target.location()
        );
    };
    line.file_bytes = transfer::copy_set_files(set, manifest, work.dir())?;
    pause_at("copy-set-staged");
    work.publish_as_is()?;
    copy_census(ends.source, ends.target, &set.id);
    pause_at("copy-published");
    Ok(())
}

/// The upgrade census of the set goes with it (`upgrade finish` compares
/// with it); best effort: a set restores without it.
fn copy_census(source: &Repository, target: &Repository, id: &str) {
    let key = format!("{CENSUSES}/{id}.json");
    let mut bytes = Vec::new();
    let read = source
        .storage()
        .get(&key)
        .and_then(|mut r| Ok(r.read_to_end(&mut bytes)?));
    let copied = match read {
        Err(e) if crate::repo::storage::is_not_found(&e) => return,
        Err(e) => Err(e),
        Ok(_) => target.storage().put_if_absent(&key, &bytes).map(drop),
    };
    if let Err(e) = copied {
        tracing::warn!("the census of set {id} was not copied: {e:#}");
    }
}

fn pause_at(point: &str) {
    super::pause_at(PAUSE_POINTS, point);
}
