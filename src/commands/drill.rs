//! `kcbackup drill`: proves a set restores. It loads the set into a
//! throwaway MariaDB and a scratch directory, checks the restored copy the
//! way kopano-server would read it, times every phase (the recovery time),
//! records the result in the repository, and cleans up.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Interrupted, config_error};
use crate::mysql::Client;
use crate::repo::{Repository, SharedLock};
use crate::restorable;
use crate::restore::config::restore_config;
use crate::restore::database;
use crate::restore::files::TreeRestore;
use crate::restore::{bucket, checks};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::settings::Settings;

/// Where drill reports are kept, one write-once file per drill.
pub const DRILLS_DIR: &str = crate::repo::storage::DRILLS;

#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// A set id or `latest`.
    pub set: String,
    /// Leave the scratch directory and the stopped server's files behind.
    pub keep: bool,
    /// Where to make the scratch directory (default: the system temp dir).
    pub scratch_parent: Option<PathBuf>,
    /// Connections loading tables at once (default: [`database::default_drill_jobs`]).
    pub jobs: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Durations {
    /// Creating and starting the throwaway MariaDB.
    #[serde(default)]
    pub server_start: f64,
    pub database_load: f64,
    pub attachment_restore: f64,
    pub config_restore: f64,
    pub checks: f64,
    /// Stopping the server and removing the scratch directory.
    #[serde(default)]
    pub cleanup: f64,
    /// `attachment_restore` runs while the server starts and loads the
    /// dump (`server_start`, `database_load`), so the phases add up to more.
    /// The measured recovery time: everything from start to verdict
    /// (server start, restores, checks; not the cleanup after it).
    pub total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub set: String,
    pub started: DateTime<Utc>,
    pub ok: bool,
    pub checks: Vec<Check>,
    pub tables: usize,
    pub rows: u64,
    pub referenced: u64,
    pub files: u64,
    pub sql_bytes: u64,
    pub attachment_bytes: u64,
    pub durations: Durations,
    /// The scratch directory, when kept.
    pub kept: Option<PathBuf>,
    /// Scratch directories of earlier runs that died, removed by this one.
    #[serde(default)]
    pub removed_leftovers: Vec<String>,
    /// Why the result could not be written into the repository (a
    /// read-only one); the verdict stands all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_recorded: Option<String>,
}

pub fn run(settings: &Settings, opts: &DrillOptions) -> Result<DrillReport> {
    crate::signals::install()?;
    let mut at = Whereabouts::default();
    let result = drill(settings, opts, &mut at);
    // The guards have run: the throwaway server and scratch are gone (or kept).
    result.map_err(|e| {
        let e = crate::signals::explain(e);
        match e.chain().find_map(|c| c.downcast_ref::<Interrupted>()) {
            Some(&Interrupted(sig)) => {
                anyhow::Error::new(Interrupted(sig)).context(at.interrupted(opts.keep))
            }
            None => e,
        }
    })
}

/// Where a drill was, for the one line an interrupted drill prints: what it
/// failed to finish says nothing about production, and must not sound so.
#[derive(Default)]
struct Whereabouts {
    set: String,
    doing: &'static str,
    scratch: Option<PathBuf>,
}

impl Whereabouts {
    fn interrupted(&self, keep: bool) -> String {
        let set = if self.set.is_empty() {
            String::new()
        } else {
            format!(" of set {}", self.set)
        };
        let doing = if self.doing.is_empty() {
            String::new()
        } else {
            format!(" while {}", self.doing)
        };
        let left = match &self.scratch {
            Some(dir) if keep => format!(
                "its throwaway MariaDB (stopped) and scratch directory are kept in {}",
                dir.display()
            ),
            Some(_) => "its throwaway MariaDB and scratch directory were removed".to_owned(),
            None => "it had not started its throwaway MariaDB yet".to_owned(),
        };
        format!(
            "the drill{set} was interrupted{doing}; {left}; \
             the production database and attachments were not touched; nothing was recorded"
        )
    }
}

/// What a failed load leaves in the drill's throwaway server.
fn partial_load(keep: bool) -> String {
    let fate = if keep {
        "kept, stopped, with the scratch directory"
    } else {
        "removed with the drill"
    };
    format!(
        "the drill's throwaway MariaDB (not the production server) holds a partial load \
         and is {fate}"
    )
}

/// A failed phase is a failed check, unless a signal caused it.
fn outcome<T>(result: Result<T>) -> Result<Result<T>> {
    match result {
        Err(e) if crate::signals::received().is_some() => Err(crate::signals::explain(e)),
        other => Ok(other),
    }
}

fn drill(settings: &Settings, opts: &DrillOptions, at: &mut Whereabouts) -> Result<DrillReport> {
    let clock = Instant::now();
    let started = Utc::now();
    let repo = Repository::open_at(&settings.repository)?;
    let mut lock = repo.lock_shared("drill")?;
    let parents: Vec<&Path> = opts.scratch_parent.iter().map(PathBuf::as_path).collect();
    let removed_leftovers = crate::scratch::remove_dead_runs(&parents);
    for name in &removed_leftovers {
        tracing::warn!("removed {name}, left by an earlier run that did not finish");
    }
    let set = repo.resolve(if opts.set.is_empty() {
        "latest"
    } else {
        &opts.set
    })?;
    at.set = set.id.clone();
    lock.describe(&format!("drill of set {}", set.id));
    let mut report = DrillReport {
        set: set.id.clone(),
        started,
        ok: false,
        checks: Vec::new(),
        tables: 0,
        rows: 0,
        referenced: 0,
        files: 0,
        sql_bytes: 0,
        attachment_bytes: 0,
        durations: Durations::default(),
        kept: None,
        removed_leftovers,
        not_recorded: None,
    };
    let manifest = match &set.manifest {
        Ok(m) => m.clone(),
        Err(e) => {
            report.checks.push(failed("manifest", e.clone()));
            report.durations.total = clock.elapsed().as_secs_f64();
            return finish(&repo, &lock, report);
        }
    };

    // 0. Restore's own checks, by `stat` alone: a set restore would refuse
    // is refused here with the same words, before any server is started.
    let store = repo.objects()?;
    let findings = restorable::check(set.local_dir(), &manifest, &store);
    if !findings.is_empty() {
        report.checks.push(failed(
            "restorable",
            format!("set {} cannot be restored: {}", set.id, findings.summary()),
        ));
        report.durations.total = clock.elapsed().as_secs_f64();
        return finish(&repo, &lock, report);
    }
    report.checks.push(passed(
        "restorable",
        "manifest fields, layout, paths and links, every object at its recorded size".into(),
    ));

    // An s3 set goes into the scratch bucket when there is one (emptied
    // first: a drill that was killed leaves its objects), else into the
    // scratch directory as files by key.
    let s3 = restorable::is_s3(&manifest);
    let scratch_bucket = match (&manifest.attachments.s3, &settings.drill_s3_bucket) {
        (Some(source), Some(bucket)) if s3 => {
            let client = bucket::client_for(settings, source, None)?;
            if *bucket == source.bucket {
                return config_error(format!(
                    "[drill] s3_bucket is {bucket}, the bucket the set's objects came from: a \
                     drill empties its scratch bucket, so it must be one for drills only"
                ));
            }
            match client.head_bucket(bucket) {
                Err(e) if e.is_not_found() => client.create_bucket(bucket)?,
                other => other?,
            }
            let left = bucket::empty_bucket(&client, bucket)?;
            if left > 0 {
                tracing::warn!(
                    "removed {left} objects from the scratch bucket {bucket}, left by an earlier \
                     drill that did not finish"
                );
            }
            Some((client, bucket.clone(), source.clone()))
        }
        _ => None,
    };

    // 1. A scratch directory and, inside it, a throwaway server: their
    // guards remove both on every way out (the server first, being younger).
    // Named after this run, so that the next one can remove it if this one
    // is killed before its guard runs; with --keep it stays on every way out.
    let scratch = crate::scratch::create(
        crate::scratch::DRILL_PREFIX,
        opts.scratch_parent.as_deref(),
        opts.keep,
    )
    .context("while creating the drill's scratch directory")?;
    at.scratch = Some(scratch.path().to_path_buf());
    // 2. Restore, timing each phase; a failed restore is a failed check.
    // The attachments are restored while the server starts and loads the
    // dump: one mostly writes files, the other mostly runs mariadbd.
    at.doing = "starting its throwaway MariaDB, loading the dump and restoring the attachments";
    let attachments = scratch.path().join("attachments");
    let (served, tree) = std::thread::scope(|scope| {
        let tree = scope.spawn(|| {
            restore_attachments(
                &repo,
                &set,
                &manifest,
                &store,
                &attachments,
                scratch_bucket.as_ref(),
            )
        });
        let served = (|| -> Result<_> {
            let t = Instant::now();
            let sandbox = Sandbox::start(&SandboxOptions {
                keep: opts.keep,
                parent_dir: Some(sandbox_parent(scratch.path())),
                tuned_for_load: true,
                ..Default::default()
            })
            .context("while starting the drill's throwaway MariaDB")?;
            let server_start = t.elapsed().as_secs_f64();
            crate::signals::check()?;
            let target = sandbox.root_target("kopano");
            let t = Instant::now();
            let partial = partial_load(opts.keep);
            let loaded = outcome(database::load(
                set.local_dir(),
                &manifest,
                &store,
                &target,
                false,
                &partial,
                opts.jobs.unwrap_or_else(database::default_drill_jobs),
            ))?;
            Ok((
                sandbox,
                target,
                server_start,
                loaded,
                t.elapsed().as_secs_f64(),
            ))
        })();
        let tree = tree
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the attachment restore panicked")));
        (served, tree)
    });
    let (sandbox, target, server_start, loaded, database_load) = served?;
    let tree = tree?;
    report.durations.server_start = server_start;
    report.durations.database_load = database_load;
    report.checks.push(match &loaded {
        Ok(db) => {
            report.sql_bytes = db.bytes;
            passed("database load", format!("{} bytes of SQL", db.bytes))
        }
        Err(e) => {
            // A chunk with bad data: moved aside, so the next backup
            // writes it again from the live database.
            let moved = restorable::move_aside_corrupt_chunks(set.local_dir(), &manifest, &store);
            let moved = match moved.is_empty() {
                true => String::new(),
                false => format!("; corrupt, moved aside: {}", moved.join(", ")),
            };
            failed("database load", format!("{e:#}{moved}"))
        }
    });
    report.checks.extend(tree.check);
    report.files = tree.files;
    report.attachment_bytes = tree.bytes;
    report.durations.attachment_restore = tree.seconds;
    let tree_ok = tree.ok;

    at.doing = "restoring the configuration into its scratch directory";
    let t = Instant::now();
    if !manifest.config.file.is_empty() {
        let mut tree = TreeRestore::default();
        let mut notes = Vec::new();
        let restored = outcome(restore_config(
            &set.local_path(&manifest.config.file),
            &manifest.config.entries,
            &scratch.path().join("config"),
            &mut tree,
            &mut notes,
        ))?;
        report.checks.push(match restored {
            Ok(()) => passed(
                "config restore",
                format!("{} files, checksums verified", tree.files),
            ),
            Err(e) => failed("config restore", format!("{e:#}")),
        });
    }
    report.durations.config_restore = t.elapsed().as_secs_f64();

    // 3. Check the restored copy as kopano-server would read it. Without a
    // loaded database there is nothing to check against; without a complete
    // tree the restore check has already named the first bad file.
    at.doing = "checking the restored copy";
    let t = Instant::now();
    let restored_objects: Box<dyn checks::RestoredObjects + '_> = match &scratch_bucket {
        Some((client, bucket, _)) => Box::new(bucket::ObjectsInBucket { client, bucket }),
        None => Box::new(checks::ObjectsInDir(&attachments)),
    };
    let index = (tree_ok && !manifest.attachments.index_file.is_empty())
        .then(|| set.local_path(&manifest.attachments.index_file));
    // Re-reading the restored files runs beside the database's checks (an
    // s3 set's objects are looked up after them, through one client).
    let (db_checks, file_check) = std::thread::scope(|scope| {
        let files = index.as_ref().filter(|_| !s3).map(|index| {
            let attachments = &attachments;
            scope.spawn(move || checks::check_files(index, attachments))
        });
        let db = (|| -> Result<Vec<Check>> {
            let mut found = Vec::new();
            if loaded.is_ok() {
                let client = Client::new(&target)?;
                found.extend(checks::check_database(
                    &client,
                    &manifest,
                    &mut report.tables,
                    &mut report.rows,
                )?);
                if tree_ok && s3 {
                    found.push(checks::check_s3_references(
                        &client,
                        &restorable::s3_prefix(&manifest),
                        restored_objects.as_ref(),
                        &mut report.referenced,
                    )?);
                } else if tree_ok {
                    found.push(checks::check_references(
                        &client,
                        &manifest,
                        &attachments,
                        &mut report.referenced,
                    )?);
                }
            }
            Ok(found)
        })();
        let files = files.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow!("the attachment checks panicked")))
        });
        (db, files)
    });
    report.checks.extend(db_checks?);
    if let Some(check) = file_check {
        report.checks.push(check?);
    }
    if let (true, Some(index)) = (s3, &index) {
        report
            .checks
            .push(checks::check_s3_objects(index, restored_objects.as_ref())?);
    }
    drop(restored_objects);
    report.durations.checks = t.elapsed().as_secs_f64();

    // 4. The verdict is in: that is the recovery time. Clean up (unless
    // kept), then record it.
    report.durations.total = clock.elapsed().as_secs_f64();
    at.doing = "cleaning up";
    let t = Instant::now();
    if !opts.keep {
        // Its data is thrown away: a clean InnoDB shutdown would only flush
        // pages to disk (tens of seconds behind the restored tree's writeback).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sandbox.mariadbd_pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    sandbox.stop()?;
    if let Some((client, bucket, _)) = &scratch_bucket
        && !opts.keep
    {
        // Not emptied is a failed drill: it leaves copies behind.
        if let Err(e) = bucket::empty_bucket(client, bucket) {
            report
                .checks
                .push(failed("scratch bucket emptied", format!("{e:#}")));
        }
    }
    if opts.keep {
        report.kept = Some(scratch.keep());
    } else {
        scratch
            .close()
            .context("while removing the drill's scratch directory")?;
    }
    report.durations.cleanup = t.elapsed().as_secs_f64();
    finish(&repo, &lock, report)
}

/// The drill's scratch bucket for an s3 set: its client, its name, and
/// the set's source (whose key prefix the objects keep).
type ScratchBucket = (crate::s3::Client, String, crate::repo::manifest::S3Source);

/// What restoring the set's attachment tree in a drill gave: its check
/// (none for a set without attachments), counts and time.
struct TreeOutcome {
    check: Option<Check>,
    ok: bool,
    files: u64,
    bytes: u64,
    seconds: f64,
}

/// Restores the set's attachment tree into `attachments`; a failed restore
/// is a failed check (and its corrupt objects are moved aside), a signal
/// an error.
fn restore_attachments(
    repo: &Repository,
    set: &crate::repo::SetInfo,
    manifest: &crate::repo::manifest::Manifest,
    store: &crate::repo::ObjectStore,
    attachments: &Path,
    scratch_bucket: Option<&ScratchBucket>,
) -> Result<TreeOutcome> {
    let t = Instant::now();
    let mut out = TreeOutcome {
        check: None,
        ok: true,
        files: 0,
        bytes: 0,
        seconds: 0.0,
    };
    if manifest.attachments.index_file.is_empty() {
        fs::create_dir_all(attachments)?;
    } else {
        let restored = match scratch_bucket {
            Some((client, bucket, source)) => {
                let target = bucket::Target {
                    client,
                    bucket,
                    prefix: &source.prefix,
                };
                let index = set.local_path(&manifest.attachments.index_file);
                outcome(bucket::restore(&target, store, &index, false))?
                    .map(|b| (b.objects, b.bytes, format!("objects into bucket {bucket}")))
            }
            None => outcome(super::restore::attachments(
                repo,
                set,
                manifest,
                attachments,
                false,
            ))?
            .map(|t| {
                let what = match restorable::is_s3(manifest) {
                    true => "objects as files by key",
                    false => "files",
                };
                (t.files, t.bytes, what.to_string())
            }),
        };
        out.check = Some(match &restored {
            Ok((files, bytes, what)) => {
                out.files = *files;
                out.bytes = *bytes;
                passed(
                    "attachment restore",
                    format!("{files} {what}, {bytes} bytes, every checksum verified"),
                )
            }
            Err(e) => {
                // Bad data in an object: find every such object and move it
                // aside, so the next backup writes it again.
                let moved = restorable::move_aside_corrupt(set.local_dir(), manifest, store);
                let moved = match moved.is_empty() {
                    true => String::new(),
                    false => format!("; corrupt, moved aside: {}", moved.join(", ")),
                };
                failed("attachment restore", format!("{e:#}{moved}"))
            }
        });
        out.ok = restored.is_ok();
    }
    out.seconds = t.elapsed().as_secs_f64();
    Ok(out)
}

/// The sandbox lives in the scratch directory (one thing to clean up, one
/// thing to keep), unless that makes its socket path too long for
/// `sun_path`; then in the temp dir, or `/tmp`.
fn sandbox_parent(scratch: &Path) -> PathBuf {
    // `<parent>/kcsb-XXXXXX/mysqld.sock` must stay within 107 bytes.
    let fits = |p: &Path| p.as_os_str().len() + "/kcsb-XXXXXX/mysqld.sock".len() <= 100;
    [scratch.to_path_buf(), std::env::temp_dir()]
        .into_iter()
        .find(|p| fits(p))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

pub(crate) fn passed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail,
    }
}

pub(crate) fn failed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail,
    }
}

/// Sets the verdict and writes the report into the repository. A report
/// that cannot be written (a read-only repository) is still returned, and
/// says so: the verdict matters more than its record.
fn finish(repo: &Repository, lock: &SharedLock, mut report: DrillReport) -> Result<DrillReport> {
    report.ok = !report.checks.is_empty() && report.checks.iter().all(|c| c.ok);
    if let Err(e) = record(repo, lock, &report) {
        let why = format!("{e:#}");
        tracing::warn!("the drill's result is not recorded in the repository: {why}");
        report.not_recorded = Some(why);
    }
    Ok(report)
}

/// Writes the report once under a name of its own (`<set>--<time>.json`),
/// under the readers' lock the drill holds: a report is a record beside
/// the sets, written once, so it needs backup and prune kept out, not
/// other readers.
fn record(repo: &Repository, lock: &SharedLock, report: &DrillReport) -> Result<()> {
    let stem = format!(
        "{}--{}",
        report.set,
        report.started.format("%Y%m%dT%H%M%S%.3fZ")
    );
    repo.write_record(lock, DRILLS_DIR, &stem, &serde_json::to_vec_pretty(report)?)
        .map(drop)
}

/// The newest drill of each set, for `list`.
pub fn last_drills(repo: &Repository) -> std::collections::BTreeMap<String, DrillReport> {
    let mut last = std::collections::BTreeMap::new();
    let records = match repo.records(DRILLS_DIR) {
        Ok(records) => records,
        Err(e) => {
            tracing::debug!("no drill reports: {e:#}");
            return last;
        }
    };
    for (_, bytes) in records {
        let Ok(report) = serde_json::from_slice::<DrillReport>(&bytes) else {
            continue;
        };
        let newer = last
            .get(&report.set)
            .is_none_or(|seen: &DrillReport| report.started >= seen.started);
        if newer {
            last.insert(report.set.clone(), report);
        }
    }
    last
}
