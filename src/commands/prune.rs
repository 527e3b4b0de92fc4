//! `kcbackup prune` and `kcbackup forget`: choose the sets that go (the
//! retention policy, or the sets named), then collect garbage in steps that
//! are each safe to be killed after (see `sweep` below and the README).
//!
//! For tests only: `KCBACKUP_TEST_PAUSE_AT=<point>` makes the run stop
//! itself with SIGSTOP at that point (see [`PAUSE_POINTS`]), so a test can
//! SIGKILL it exactly there. Unset in production; it changes nothing else.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::error::config_error;
use crate::repo::contents::referenced_objects;
use crate::repo::manifest::SetStatus;
use crate::repo::sweep::StoredObject;
use crate::repo::{ExclusiveLock, Repository, SetInfo};
use crate::retention::{self, Candidate, Kind, Policy};
use crate::settings::Settings;
use crate::signals;

pub use crate::signals::PAUSE_ENV;
/// Every point, in the order a run passes them.
pub const PAUSE_POINTS: &[&str] = &[
    "locked",
    "leftovers-removed",
    "retired-first",
    "retired-all",
    "planned",
    "deleted-first-object",
    "deleted-half-objects",
    "swept",
    "trash-first-deleted",
    "trash-deleted",
    "done",
];

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The rules of the command line; `None`: `[retention]` applies.
    pub policy: Option<Policy>,
    /// Calendar buckets in UTC instead of the host's local time.
    pub utc: bool,
    pub dry_run: bool,
    pub lock_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub sets: Vec<String>,
    /// Allows forgetting the newest complete set.
    pub force: bool,
    pub dry_run: bool,
    pub lock_wait: Duration,
}

/// What `prune` or `forget` decided and did (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// `prune` or `forget`.
    pub command: &'static str,
    /// Nothing was changed; the counts say what a real run would do.
    pub dry_run: bool,
    /// The rules applied (`daily 7`, ...); for forget, the sets named.
    pub rules: Vec<String>,
    /// `local` or `utc`: the clock of the calendar buckets (prune only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<&'static str>,
    /// Every set, oldest first, with the verdict and what keeps it.
    pub sets: Vec<SetVerdict>,
    pub sets_removed: Vec<String>,
    /// Sets an earlier, interrupted prune had retired, deleted now.
    pub finished_earlier: Vec<String>,
    pub objects_deleted: u64,
    /// Object files and set files deleted.
    pub bytes_reclaimed: u64,
    /// Objects still referenced by some set.
    pub objects_live: u64,
    /// Why no object was deleted although sets went, if so (exit 3).
    pub sweep_skipped: Option<String>,
    /// Objects in `objects/.corrupt/` (kept for inspection, never deleted).
    pub quarantined_objects: u64,
    pub drill_reports_removed: u64,
    /// Upgrade censuses (`upgrade prepare`) of removed sets.
    pub censuses_removed: u64,
    /// Work directories and unfinished objects of crashed runs removed.
    pub removed_leftovers: Vec<String>,
    pub seconds: f64,
}

impl PruneReport {
    /// The plan, before anything is executed: the counts are filled in as it is.
    fn planned(
        command: &'static str,
        dry_run: bool,
        sets: Vec<SetVerdict>,
        removed_leftovers: Vec<String>,
    ) -> PruneReport {
        PruneReport {
            command,
            dry_run,
            rules: Vec::new(),
            time_zone: None,
            sets,
            sets_removed: Vec::new(),
            finished_earlier: Vec::new(),
            objects_deleted: 0,
            bytes_reclaimed: 0,
            objects_live: 0,
            sweep_skipped: None,
            quarantined_objects: 0,
            drill_reports_removed: 0,
            censuses_removed: 0,
            removed_leftovers,
            seconds: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SetVerdict {
    pub id: String,
    pub time: Option<DateTime<Utc>>,
    /// `complete`, `incomplete` or `damaged`.
    pub status: String,
    pub tag: Option<String>,
    /// `keep` or `remove`.
    pub action: &'static str,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

/// The lock a run holds: exclusive to change anything, shared to look.
enum Held {
    Write(ExclusiveLock),
    Read(#[allow(dead_code)] crate::repo::SharedLock),
}

pub fn prune(settings: &Settings, opts: &PruneOptions) -> Result<PruneReport> {
    signals::install()?;
    let clock = Instant::now();
    let policy = opts
        .policy
        .clone()
        .unwrap_or_else(|| settings.retention.clone());
    if !policy.has_rule() {
        return config_error(
            "prune needs at least one rule: --keep-last, --keep-hourly, --keep-daily, \
             --keep-weekly, --keep-monthly, --keep-yearly, --keep-within or --keep-tag \
             (or keys in [retention]); without any it would remove every set but the newest",
        );
    }
    let repo = Repository::open(&settings.repository)?;
    let (held, removed_leftovers) = lock(&repo, "prune", opts.dry_run, opts.lock_wait)?;
    let sets = repo.sets()?;
    let wall: &dyn Fn(DateTime<Utc>) -> NaiveDateTime = if opts.utc {
        &retention::utc
    } else {
        &retention::host_local
    };
    let candidates: Vec<Candidate> = sets.iter().map(candidate).collect();
    let decisions = retention::decide(&candidates, &policy, wall);
    let verdicts: Vec<SetVerdict> = sets
        .iter()
        .zip(&decisions)
        .map(|(s, d)| {
            verdict(
                s,
                d.keep(),
                d.reasons.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let mut report = PruneReport::planned("prune", opts.dry_run, verdicts, removed_leftovers);
    report.rules = policy.describe();
    report.time_zone = Some(if opts.utc { "utc" } else { "local" });
    execute(&repo, &held, &sets, report, clock)
}

pub fn forget(settings: &Settings, opts: &ForgetOptions) -> Result<PruneReport> {
    signals::install()?;
    let clock = Instant::now();
    let repo = Repository::open(&settings.repository)?;
    let (held, removed_leftovers) = lock(&repo, "forget", opts.dry_run, opts.lock_wait)?;
    let sets = repo.sets()?;
    let mut named = BTreeSet::new();
    for spec in &opts.sets {
        named.insert(repo.resolve(spec)?.id);
    }
    let newest_complete = sets.iter().rev().find(|s| s.is_complete());
    if let Some(newest) = newest_complete
        && named.contains(&newest.id)
        && !opts.force
    {
        return config_error(format!(
            "{} is the newest complete set: forgetting it needs --force \
             (until the next backup, `latest` would name an older set or none)",
            newest.id
        ));
    }
    let verdicts = sets
        .iter()
        .map(|s| {
            let keep = !named.contains(&s.id);
            let reasons = if keep {
                vec!["not named".to_owned()]
            } else {
                Vec::new()
            };
            verdict(s, keep, reasons)
        })
        .collect();
    let mut report = PruneReport::planned("forget", opts.dry_run, verdicts, removed_leftovers);
    report.rules = named.iter().cloned().collect();
    execute(&repo, &held, &sets, report, clock)
}

/// The exclusive lock (waiting up to `wait`) and the leftovers of crashed
/// runs removed, as backup does; a dry run only reads under the shared lock.
fn lock(
    repo: &Repository,
    operation: &str,
    dry_run: bool,
    wait: Duration,
) -> Result<(Held, Vec<String>)> {
    if dry_run {
        return Ok((
            Held::Read(repo.lock_shared_waiting(&format!("{operation} --dry-run"), wait)?),
            Vec::new(),
        ));
    }
    let lock = repo.lock_exclusive_waiting(operation, wait)?;
    pause_at("locked");
    let mut removed = repo.remove_leftovers(&lock)?;
    removed.extend(crate::scratch::remove_dead_runs(&[]));
    pause_at("leftovers-removed");
    Ok((Held::Write(lock), removed))
}

/// Retires the sets the report removes, then sweeps; a dry run counts.
fn execute(
    repo: &Repository,
    held: &Held,
    sets: &[SetInfo],
    mut report: PruneReport,
    clock: Instant,
) -> Result<PruneReport> {
    let remove: Vec<String> = report
        .sets
        .iter()
        .filter(|v| v.action == "remove")
        .map(|v| v.id.clone())
        .collect();
    report.finished_earlier = repo.retired_sets()?;
    report.quarantined_objects = repo.objects()?.quarantined().0;
    let lock = match held {
        Held::Read(_) => {
            // What would remain, and what a sweep would then delete.
            let remaining: Vec<&SetInfo> =
                sets.iter().filter(|s| !remove.contains(&s.id)).collect();
            let plan = plan(repo, &remaining)?;
            report.sets_removed = remove;
            report.objects_live = plan.live;
            match plan.dead {
                Ok(dead) => {
                    report.objects_deleted = dead.len() as u64;
                    report.bytes_reclaimed = dead.iter().map(|o| o.bytes).sum::<u64>()
                        + report
                            .sets_removed
                            .iter()
                            .map(|id| repo.set_bytes(id))
                            .sum::<u64>();
                }
                Err(why) => report.sweep_skipped = Some(why),
            }
            report.seconds = clock.elapsed().as_secs_f64();
            return Ok(report);
        }
        Held::Write(lock) => lock,
    };
    for (n, id) in remove.iter().enumerate() {
        signals::check()?;
        repo.retire_set(lock, id)?;
        report.sets_removed.push(id.clone());
        if n == 0 {
            pause_at("retired-first");
        }
    }
    pause_at("retired-all");
    sweep(repo, lock, &mut report)?;
    report.seconds = clock.elapsed().as_secs_f64();
    pause_at("done");
    Ok(report)
}

/// What a sweep would delete: objects no set in `remaining` references,
/// or why none may be (a set whose references cannot be read).
struct Plan {
    live: u64,
    dead: std::result::Result<Vec<StoredObject>, String>,
}

fn plan(repo: &Repository, remaining: &[&SetInfo]) -> Result<Plan> {
    let mut live = BTreeSet::new();
    for set in remaining {
        signals::check()?;
        let manifest = match &set.manifest {
            Ok(m) => m,
            Err(why) => {
                return Ok(Plan {
                    live: 0,
                    dead: Err(format!(
                        "set {} is damaged ({why}): what it references is unknown, so no object \
                         is deleted; restore its manifest, or `kcbackup forget {}` it",
                        set.id, set.id
                    )),
                });
            }
        };
        match referenced_objects(&set.dir, manifest) {
            Ok(objects) => live.extend(objects.into_keys()),
            Err(e) => {
                return Ok(Plan {
                    live: 0,
                    dead: Err(format!(
                        "the objects set {} references cannot be read ({e:#}), so no object is \
                         deleted; `kcbackup verify {}` says more",
                        set.id, set.id
                    )),
                });
            }
        }
    }
    let mut dead = Vec::new();
    repo.objects()?.list_objects(&mut |o| {
        if !live.contains(&o.sha256) {
            dead.push(o);
        }
        Ok(())
    })?;
    Ok(Plan {
        live: live.len() as u64,
        dead: Ok(dead),
    })
}

/// The garbage collection after the sets to go were retired (renamed to
/// trash, synced): the live objects are computed from EVERY set that
/// remains, only objects none of them references are deleted, then every
/// retired set, then drill reports of sets that are gone. Each step is safe
/// to be killed after and to repeat: the next prune finishes the job.
fn sweep(repo: &Repository, lock: &ExclusiveLock, report: &mut PruneReport) -> Result<()> {
    let remaining = repo.sets()?;
    let refs: Vec<&SetInfo> = remaining.iter().collect();
    let plan = plan(repo, &refs)?;
    pause_at("planned");
    report.objects_live = plan.live;
    match plan.dead {
        Ok(dead) => {
            let store = repo.objects()?;
            let half = dead.len().div_ceil(2);
            for (n, object) in dead.iter().enumerate() {
                if n % 256 == 0 {
                    signals::check()?;
                }
                store.delete_object(lock, object)?;
                report.objects_deleted += 1;
                report.bytes_reclaimed += object.bytes;
                if n == 0 {
                    pause_at("deleted-first-object");
                }
                if n + 1 == half {
                    pause_at("deleted-half-objects");
                }
            }
        }
        Err(why) => {
            tracing::warn!("{why}");
            report.sweep_skipped = Some(why);
        }
    }
    pause_at("swept");
    for (n, id) in repo.retired_sets()?.iter().enumerate() {
        signals::check()?;
        report.bytes_reclaimed += repo.delete_retired(lock, id)?;
        if n == 0 {
            pause_at("trash-first-deleted");
        }
    }
    pause_at("trash-deleted");
    let ids: BTreeSet<String> = remaining.into_iter().map(|s| s.id).collect();
    report.drill_reports_removed = repo.delete_orphan_drill_reports(lock, &ids)? as u64;
    report.censuses_removed = repo.delete_orphan_censuses(lock, &ids)? as u64;
    Ok(())
}

fn candidate(s: &SetInfo) -> Candidate {
    match &s.manifest {
        Ok(m) => Candidate {
            id: s.id.clone(),
            time: m.started,
            kind: match m.status {
                SetStatus::Complete => Kind::Complete,
                SetStatus::Incomplete => Kind::Incomplete,
            },
            tag: m.tag.clone(),
        },
        Err(_) => Candidate {
            id: s.id.clone(),
            time: id_time(&s.id).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            kind: Kind::Damaged,
            tag: None,
        },
    }
}

/// The UTC start time a set id begins with (`20261129T190455Z[-2]`).
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let head = id.get(..16)?;
    NaiveDateTime::parse_from_str(head, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

fn verdict(s: &SetInfo, keep: bool, reasons: Vec<String>) -> SetVerdict {
    let (time, tag) = match &s.manifest {
        Ok(m) => (Some(m.started), m.tag.clone()),
        Err(_) => (id_time(&s.id), None),
    };
    SetVerdict {
        id: s.id.clone(),
        time,
        status: s.status().to_owned(),
        tag,
        action: if keep { "keep" } else { "remove" },
        reasons,
    }
}

/// Stops this process (SIGSTOP) when the test-only variable names `point`.
fn pause_at(point: &str) {
    debug_assert!(PAUSE_POINTS.contains(&point), "{point}");
    signals::pause_for_test(point);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ids_give_their_start_time() {
        assert_eq!(
            id_time("20261129T190455Z-2").map(|t| t.to_rfc3339()),
            Some("2026-11-29T19:04:55+00:00".to_owned())
        );
        assert_eq!(id_time("junk"), None);
        assert_eq!(id_time("2026112\u{e9}T190455Z"), None);
    }
}
