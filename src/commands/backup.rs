//! The backup coordinator. It reads like the procedure it performs: check
//! every source and target, lock, dump the database FIRST (its snapshot
//! defines what must be present), capture the rest, prove completeness,
//! write the manifest last, publish.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use chrono::Utc;
use serde::Serialize;

use crate::attachments::rolling::{self, RollingOptions, RollingStats};
use crate::attachments::s3::S3CaptureOptions;
use crate::attachments::{self, CaptureOptions, CaptureStats};
use crate::cancel::Cancel;
use crate::config_archive::{self, ConfigInfo};
use crate::crossref;
use crate::dump::{self, DumpFiles, DumpReport};
use crate::layout::Layout;
use crate::preflight;
use crate::progress::{Joint, Progress};
use crate::repo::chunk_list;
use crate::repo::contents::{
    ATTACHMENTS_FILE, CHUNK_LIST_FILE, CONFIG_FILE, LOB_FILE, REFERENCES_FILE,
};
use crate::repo::manifest::{
    AttachmentsInfo, DatabaseInfo, FORMAT, KopanoInfo, Manifest, Phase, S3Source, SetStatus,
};
use crate::repo::{Repository, objects};
use crate::restorable;
use crate::s3;
use crate::settings::{FollowSymlinks, Settings};
use crate::signals;
use crate::snapshot::{self, SnapshotInfo};

/// For tests (`KCBACKUP_TEST_PAUSE_AT`): the capture is about to read the
/// first file (alongside the dump or after it).
pub const PAUSE_CAPTURE: &str = "capture";

/// How many restorability findings the warnings list (the count is exact).
const LISTED_FINDINGS: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tag: Option<String>,
    /// Read every attachment, trusting no checksum of an earlier set.
    pub rehash: bool,
    /// How long to wait for another run's lock (`--lock-wait`); zero fails at once.
    pub lock_wait: std::time::Duration,
    /// `upgrade prepare`'s note on the services, recorded in the manifest.
    pub upgrade: Option<crate::repo::manifest::UpgradeMark>,
}

/// What `backup` reports (also its `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub set: String,
    pub status: SetStatus,
    pub db: DbSummary,
    pub kopano_version: Option<String>,
    pub storage_backend: Option<String>,
    pub attachments: AttachmentsInfo,
    pub config: ConfigSummary,
    /// The snapshot actually used (`method`: btrfs, lvm or none) and `window_ms`.
    pub snapshot: SnapshotInfo,
    /// What was snapshotted, or why nothing (said once).
    pub snapshot_note: String,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    pub warnings: Vec<String>,
    /// Why restore would refuse the set (then it is incomplete), capped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_restorable: Vec<String>,
    /// Hidden work directories of crashed earlier runs, and scratch
    /// directories of killed drills and verifies, that were removed.
    pub removed_leftovers: Vec<String>,
    /// Snapshots and mounts of crashed earlier runs that were removed.
    pub removed_snapshots: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbSummary {
    pub bytes: u64,
    /// What the dump's chunks take in the store, shared ones included.
    pub stored_bytes: u64,
    /// Chunks this backup added to the store, and their stored bytes.
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub chunks: u64,
    pub sha256: String,
    pub tables: usize,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    pub source: PathBuf,
    pub entries: usize,
    pub bytes: u64,
}

pub fn run(
    settings: &Settings,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    signals::install()?;
    let started = Utc::now();
    let clock = Instant::now();
    let mut phases = Vec::new();
    let mut warnings = Vec::new();

    // First every source and target must answer: what fails here fails
    // before anything is dumped.
    let ready = preflight::check(settings)?;
    let plan = ready.plan;
    // A tree is captured alongside the dump; a bucket after it (below).
    let overlap = settings.overlap && ready.layout != Layout::S3;

    // 1. One writer at a time; clear what a crashed run left behind.
    let repo = Repository::open_or_create_at(&settings.repository)?;
    let lock = repo.lock_exclusive_waiting("backup", opts.lock_wait)?;
    let mut removed_leftovers = repo.remove_leftovers(&lock)?;
    removed_leftovers.extend(crate::scratch::remove_dead_runs(&[]));
    let removed_snapshots = snapshot::remove_stale(&plan)?;
    for name in removed_leftovers.iter().chain(&removed_snapshots) {
        tracing::warn!("removed {name}, left by an earlier run that did not finish");
    }
    let set = repo.begin_set(&lock, started)?;

    // 2. The database first: what its snapshot references must be present
    //    later. The filesystem snapshot is taken the moment the dump's
    //    transaction is open, while the dump goes on streaming; if it cannot
    //    be taken, the dump stops there instead of running on for nothing.
    //
    // 3. The attachment store, from the snapshot when there is one: whatever
    //    the dump references was written before its transaction began. With
    //    `[backup] overlap` (the default) its capture starts right there,
    //    once the snapshot is taken, and runs alongside the rest of the dump.
    //    That misses nothing a capture after the dump would have caught
    //    (kopano-facts.md, section 4): the dump's view of the database is
    //    fixed when its transaction starts, however long it streams on; the
    //    server writes an attachment file before the commit that references
    //    it, so every file that view references exists by then, and it
    //    unlinks a file only before the commit that drops the reference, a
    //    commit the view never sees. A file read at any moment after the
    //    view was fixed is therefore as good as one read after the dump, and
    //    a file deleted in between is lost to both alike (reading sooner
    //    only narrows that window; a snapshot closes it). Files written
    //    during the dump are extras either way. All that matters is that no
    //    file is read before the view is fixed, and the capture cannot start
    //    before the callback that says so.
    let store = repo.objects()?;
    // Fixed when the repository was created: other sizes would cut other
    // chunks and stop new dumps deduplicating against old ones.
    let chunker = repo.chunker();
    let files = DumpFiles {
        singleinstances: &set.path(REFERENCES_FILE),
        lob: &set.path(LOB_FILE),
        chunk_list: &set.path(CHUNK_LIST_FILE),
    };
    // This backup's turn of rolling verification, for the dump's chunks
    // here and the attachment objects after the capture.
    let rolling_counter = next_rolling_counter(&repo)?;
    let days = settings.rolling_days.max(1);
    let reuse = dump::Reuse {
        recorded: recorded_chunks(&repo)?,
        rolling: Some((days, (rolling_counter % u64::from(days)) as u32)),
    };
    let previous = if opts.rehash {
        None
    } else {
        previous_set(&repo)?
    };
    // Raised by whichever half fails first, so the other stops too.
    let cancel = Cancel::default();
    let capture_opts = CaptureOptions {
        previous_index: previous.as_ref().map(|(_, index)| index.clone()),
        follow_dirs: settings.follow_symlinks == FollowSymlinks::Directories,
        cancel: cancel.clone(),
        ..CaptureOptions::default()
    };
    let index_path = set.path(ATTACHMENTS_FILE);
    let capture_store = |source: &Path, progress: &dyn Progress| {
        signals::pause_for_test(PAUSE_CAPTURE);
        capture_attachments(
            settings,
            source,
            &store,
            &index_path,
            &capture_opts,
            progress,
        )
    };
    let joint = Joint::new(progress, "dump + attachments");
    let dump_at = clock.elapsed().as_secs_f64();
    let (taken, dumped, overlapped) = thread::scope(|scope| {
        let mut taken = None;
        let mut overlapped = None;
        let dump_progress: &dyn Progress = if overlap { &joint } else { progress };
        let dumped = dump::run(
            &settings.mysql,
            &files,
            &store,
            &chunker,
            &reuse,
            dump_progress,
            &cancel,
            |_| match taken.insert(snapshot::take(&plan, set.id())) {
                Ok(snap) => {
                    if overlap {
                        let source = snap.view_path(&settings.attachment_path);
                        let at = clock.elapsed().as_secs_f64();
                        let (capture_store, cancel, joint) = (&capture_store, &cancel, &joint);
                        let handle = scope.spawn(move || {
                            capture_store(&source, joint).inspect_err(|_| cancel.raise())
                        });
                        overlapped = Some((at, handle));
                    }
                    ControlFlow::Continue(())
                }
                Err(_) => ControlFlow::Break(()),
            },
        );
        if dumped.is_err() {
            cancel.raise();
        }
        let overlapped = overlapped.map(|(at, handle)| {
            let captured = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the attachment capture panicked")));
            (at, captured)
        });
        (taken, dumped, overlapped)
    });
    if overlap {
        progress.finish();
    }
    // A failed snapshot is why the dump stopped: its error is the one to tell.
    let taken = taken
        .transpose()
        .context("while taking the filesystem snapshot; no set was published")?;
    let db = match dumped {
        // The dump only stopped because the capture beside it failed.
        Err(e) if Cancel::caused(&e) && matches!(overlapped, Some((_, Err(_)))) => {
            let Some((_, Err(captured))) = overlapped else {
                unreachable!("matched just above")
            };
            return Err(captured);
        }
        dumped => dumped
            .map_err(signals::explain)
            .context("the database dump failed; no set was published")?,
    };
    // A dump of a database without tables never opens one: snapshot now.
    let snap = match taken {
        Some(snap) => snap,
        None => snapshot::take(&plan, set.id())
            .context("while taking the filesystem snapshot; no set was published")?,
    };
    phases.push(phase("dump", db.seconds).at(dump_at));
    signals::check()?;
    let findings = &db.findings;
    warnings.extend(storage_conflict(
        settings,
        findings.attachment_storage.as_deref(),
    ));
    // Which layout to prove against: the dump's own setting.
    let layout = Layout::resolve(
        findings.attachment_storage.as_deref(),
        &settings.attachment_storage,
    )?;

    // 3. (continued) An S3 store is listed after the dump, when the dump has said which
    // layout it uses and its transaction's start (the versioned view) is
    // known; a tree is captured alongside the dump or now.
    let (capture_at, capture, s3_source) = if layout == Layout::S3 {
        let at = clock.elapsed().as_secs_f64();
        let (capture, source) = capture_bucket(
            settings,
            &store,
            &index_path,
            capture_opts.previous_index.clone(),
            db.transaction_started,
            progress,
        )?;
        (at, capture, Some(source))
    } else {
        let (at, capture) = match overlapped {
            Some((at, captured)) => (at, captured?),
            None => {
                let at = clock.elapsed().as_secs_f64();
                let source = snap.view_path(&settings.attachment_path);
                (at, capture_store(&source, progress)?)
            }
        };
        (at, capture, None)
    };
    phases.push(phase("attachments", capture.seconds).at(capture_at));
    for sha in &db.rewritten_chunks {
        warnings.push(format!(
            "dump chunk {sha} was corrupt: moved to objects/{}/ and written again from this dump",
            objects::CORRUPT_DIR
        ));
    }
    for sha in &capture.corrupt_objects {
        warnings.push(format!(
            "object {sha} was corrupt: moved to objects/{}/ and written again from the live store",
            objects::CORRUPT_DIR
        ));
    }

    // Rolling verification, while the tree it was captured from is still
    // there (or the bucket) to write a corrupt object again: this backup's share of the
    // objects it reused without reading, re-read. (With --rehash every
    // object of the set was hashed by this run already; the slice still
    // turns, so the rounds stay regular.)
    let tree = snap.view_path(&settings.attachment_path);
    let client = match layout {
        Layout::S3 => Some(s3::Client::new(settings.s3.client_config()?)),
        _ => None,
    };
    let source = match &client {
        Some(client) => rolling::Source::Bucket {
            client,
            bucket: &settings.s3.bucket,
        },
        None => rolling::Source::Tree(&tree),
    };
    let rolling_at = clock.elapsed().as_secs_f64();
    let rolling = rolling::run(
        &store,
        &set.path(ATTACHMENTS_FILE),
        &source,
        &RollingOptions {
            days: settings.rolling_days,
            counter: rolling_counter,
        },
        progress,
    )
    .map_err(signals::explain)
    .context("while re-reading stored objects (rolling verification)")?;
    phases.push(phase("rolling verification", rolling.seconds).at(rolling_at));
    warnings.extend(rolling_warnings(&rolling));
    if capture.source_missing && !matches!(layout, Layout::Database | Layout::S3) {
        warnings.push(format!(
            "the attachment directory {} does not exist; nothing was captured",
            settings.attachment_path.display()
        ));
    }
    warnings.extend(capture_warnings(
        &capture,
        plan.method != snapshot::Method::None,
    ));

    // 4. Kopano's configuration (from the snapshot if it is on that volume).
    let config_at = clock.elapsed().as_secs_f64();
    let config_clock = Instant::now();
    let mut config = config_archive::capture(
        &snap.view_path(&settings.config_dir),
        &set.path(CONFIG_FILE),
        CONFIG_FILE,
    )
    .with_context(|| format!("while archiving {}", settings.config_dir.display()))?;
    config.source = settings.config_dir.clone();
    warnings.extend(config.notes.iter().map(|n| format!("config: {n}")));
    phases.push(phase("config", config_clock.elapsed().as_secs_f64()).at(config_at));

    // 5. Done with the snapshot. An LVM snapshot that overflowed fails the
    //    backup here: what was read from it cannot be trusted.
    let snapshot_info = snap.info(db.transaction_started)?;
    snap.release()?;
    signals::check()?;

    // 6. The proof: every instance the dump references, against what was captured.
    let proof_at = clock.elapsed().as_secs_f64();
    let proof_clock = Instant::now();
    let proof = crossref::from_files(
        layout,
        findings.server_guid.as_deref(),
        s3_source.as_ref().map(|s| s.prefix.as_str()),
        &set.path(REFERENCES_FILE),
        &set.path(ATTACHMENTS_FILE),
        &set.path(LOB_FILE),
    )
    .context("while checking the attachments against the dump")?;
    phases.push(phase("crossref", proof_clock.elapsed().as_secs_f64()).at(proof_at));

    // 7. Objects durable before the manifest names them; the manifest last,
    //    then one rename makes the set visible.
    store.sync()?;
    let mut manifest = Manifest {
        format: FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: hostname(),
        set: set.id().to_string(),
        tag: opts.tag.clone(),
        status: SetStatus::Incomplete,
        started,
        finished: Utc::now(),
        phases: phases.clone(),
        kopano: KopanoInfo {
            version: findings.kopano_version.map(|v| v.to_string()),
            storage_backend: findings.attachment_storage.clone(),
            configured_storage: settings.attachment_storage.clone(),
            layout: Some(layout),
            attachment_path: settings.attachment_path.clone(),
            config_dir: settings.config_dir.clone(),
            server_cfg: settings.server_cfg.clone(),
        },
        database: database_info(settings, &db),
        attachments: AttachmentsInfo {
            source: settings.attachment_path.clone(),
            index_file: ATTACHMENTS_FILE.into(),
            previous_set: previous.map(|(id, _)| id),
            proof,
            capture,
            rolling: Some(rolling),
            s3: s3_source,
        },
        config,
        snapshot: Some(snapshot_info.clone()),
        warnings: warnings.clone(),
        files: Vec::new(),
        upgrade: opts.upgrade.clone(),
    };
    // `complete` only for a set restore would take: the same checks
    // restore applies, on the set as it will be published.
    manifest.files = set.list_files()?;
    let restorable = restorable::check(set.dir(), &manifest, &store);
    for finding in restorable.list.iter().take(LISTED_FINDINGS) {
        warnings.push(format!("not restorable: {finding}"));
    }
    if restorable.total > LISTED_FINDINGS as u64 {
        warnings.push(format!(
            "not restorable: {} findings in all",
            restorable.total
        ));
    }
    let status = if manifest.attachments.proof.is_complete() && restorable.is_empty() {
        SetStatus::Complete
    } else {
        SetStatus::Incomplete
    };
    manifest.status = status;
    manifest.warnings = warnings.clone();
    let set_id = set.id().to_string();
    // The rename is the point of no return: a signal before it publishes
    // nothing; one that lands while the set is being published leaves a
    // finished set, which is kept and said so rather than called interrupted.
    signals::check()?;
    set.publish(&manifest)?;
    drop(lock);
    if let Some(sig) = signals::received() {
        let name = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
        warnings.push(format!(
            "{name} arrived while set {set_id} was being published; the set was finished and is kept"
        ));
    }

    Ok(BackupReport {
        set: set_id,
        status,
        db: DbSummary {
            bytes: db.bytes,
            stored_bytes: db.stored_bytes,
            new_chunks: db.new_chunks,
            new_bytes: db.new_bytes,
            chunks: db.chunks,
            sha256: db.sha256,
            tables: db.findings.row_counts.len(),
            rows: db.findings.row_counts.values().sum(),
        },
        kopano_version: manifest.kopano.version.clone(),
        storage_backend: manifest.kopano.storage_backend.clone(),
        attachments: manifest.attachments.clone(),
        config: config_summary(&manifest.config),
        snapshot: snapshot_info,
        snapshot_note: plan.note.clone(),
        duration_s: clock.elapsed().as_secs_f64(),
        phases,
        warnings,
        not_restorable: restorable
            .list
            .iter()
            .take(LISTED_FINDINGS)
            .map(|f| f.to_string())
            .collect(),
        removed_leftovers,
        removed_snapshots,
    })
}

/// Captures an `s3` store: the bucket as listed after the dump, or, with
/// versioning on, as it was when the dump's transaction began.
fn capture_bucket(
    settings: &Settings,
    store: &objects::ObjectStore,
    index: &std::path::Path,
    previous_index: Option<PathBuf>,
    transaction_started: Option<chrono::DateTime<Utc>>,
    progress: &dyn Progress,
) -> Result<(attachments::CaptureStats, S3Source)> {
    let s3 = &settings.s3;
    let client = s3::Client::new(s3.client_config()?);
    let opts = S3CaptureOptions {
        bucket: s3.bucket.clone(),
        prefix: s3_prefix(settings)?,
        downloads: s3.downloads,
        previous_index,
        view_at: transaction_started,
    };
    let captured = attachments::s3::capture_s3(&client, store, index, &opts, progress)
        .map_err(signals::explain)
        .with_context(|| attachments::s3::describe(&opts, &client))?;
    let source = S3Source {
        endpoint: client.endpoint().to_string(),
        region: s3.region.clone(),
        bucket: opts.bucket,
        prefix: opts.prefix,
        path_style: s3.path_style,
        versioning: captured.versioned,
        view_at: transaction_started.filter(|_| captured.versioned),
    };
    Ok((captured.stats, source))
}

/// The key prefix of an `s3` store: `attachment_path` + `/`, byte for byte.
pub fn s3_prefix(settings: &Settings) -> Result<String> {
    match settings.attachment_path.to_str() {
        Some(path) => Ok(Layout::s3_prefix(path)),
        None => crate::error::config_error(format!(
            "attachment_path {} is not valid UTF-8, so it is no S3 key prefix",
            settings.attachment_path.display()
        )),
    }
}

fn phase(name: &str, seconds: f64) -> Phase {
    Phase {
        name: name.into(),
        seconds,
        started_s: None,
    }
}

/// Captures the attachment tree at `source` (the snapshot's view of it, or
/// the live directory) into the set's index.
fn capture_attachments(
    settings: &Settings,
    source: &Path,
    store: &objects::ObjectStore,
    index_path: &Path,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<CaptureStats> {
    attachments::capture(source, store, index_path, opts, progress)
        .map_err(signals::explain)
        .with_context(|| {
            format!(
                "while capturing the attachment store {}",
                settings.attachment_path.display()
            )
        })
}

/// kopano-server refuses to start when server.cfg names another backend
/// than the database uses (kopano-facts.md, section 3).
fn storage_conflict(settings: &Settings, dumped: Option<&str>) -> Option<String> {
    let configured = settings.attachment_storage.as_str();
    let dumped = dumped?;
    (configured != "auto" && configured != dumped).then(|| {
        format!(
            "server.cfg says attachment_storage = {configured}, but the database uses {dumped}: \
             kopano-server would refuse to start with this configuration"
        )
    })
}

fn database_info(settings: &Settings, db: &DumpReport) -> DatabaseInfo {
    DatabaseInfo {
        database: settings.mysql.database.clone(),
        server_version: db.server_version.clone(),
        command: db.command.clone(),
        binlog: db.binlog.clone(),
        transaction_started: db.transaction_started,
        // Chunked: no file of its own (`file` and `stored_sha256` stay empty).
        file: String::new(),
        bytes: db.bytes,
        sha256: db.sha256.clone(),
        stored_bytes: db.stored_bytes,
        stored_sha256: String::new(),
        references_file: REFERENCES_FILE.into(),
        chunk_list: CHUNK_LIST_FILE.into(),
        chunk_count: db.chunks,
        new_chunks: db.new_chunks,
        new_bytes: db.new_bytes,
        lob_file: LOB_FILE.into(),
        findings: db.findings.clone(),
    }
}

/// The newest set with an intact manifest and its attachment index, whose
/// checksums of unchanged files are reused. An incomplete set qualifies:
/// its index is as accurate as any, and the store is checked to still hold
/// each reused object, so one missing file does not cost a full re-read.
fn previous_set(repo: &Repository) -> Result<Option<(String, PathBuf)>> {
    let newest = repo.sets()?.into_iter().rev().find_map(|set| {
        let manifest = set.manifest.as_ref().ok()?;
        let name = &manifest.attachments.index_file;
        let listed = !name.is_empty() && manifest.files.iter().any(|f| &f.name == name);
        listed.then(|| (set.id.clone(), set.local_path(name)))
    });
    Ok(newest)
}

/// The stored size of each chunk of the newest set's dump: a chunk found in
/// the store at another size is written again rather than trusted. A list
/// that cannot be read records nothing (its set's verify says why).
fn recorded_chunks(repo: &Repository) -> Result<HashMap<String, u64>> {
    let Some(set) = repo.sets()?.into_iter().rev().find(|s| s.manifest.is_ok()) else {
        return Ok(HashMap::new());
    };
    let Ok(manifest) = &set.manifest else {
        return Ok(HashMap::new());
    };
    let mut recorded = HashMap::new();
    let Ok(chunks) = chunk_list::open(set.local_dir(), manifest) else {
        return Ok(recorded);
    };
    for chunk in chunks {
        let Ok(c) = chunk else {
            break;
        };
        if c.stored_bytes != 0 {
            recorded.insert(c.sha256, c.stored_bytes);
        }
    }
    Ok(recorded)
}

/// This backup's number for rolling verification: one more than the
/// newest set's, so the slices go round whatever sets were removed.
fn next_rolling_counter(repo: &Repository) -> Result<u64> {
    let sets = repo.sets()?;
    let last = sets.iter().rev().find_map(|s| {
        let m = s.manifest.as_ref().ok()?;
        m.attachments.rolling.as_ref().map(|r| r.counter)
    });
    Ok(last.map_or(sets.len() as u64, |c| c + 1))
}

/// What a human should hear about objects rolling verification found bad.
fn rolling_warnings(r: &RollingStats) -> Vec<String> {
    let mut out = Vec::new();
    if !r.corrupt.is_empty() {
        out.push(format!(
            "rolling verification found {} corrupt or missing objects: moved to objects/{}/, \
             {} written again from the live store",
            r.corrupt.len(),
            objects::CORRUPT_DIR,
            r.rewritten
        ));
    }
    for path in &r.lost {
        out.push(format!(
            "{path}: its object is corrupt and the live store no longer holds that data"
        ));
    }
    out
}

/// What a human should hear about files that could not be captured, and
/// about symlinks and special files in the store (README: "Symlinks in the
/// attachment store").
fn capture_warnings(c: &attachments::CaptureStats, snapshot: bool) -> Vec<String> {
    let mut out = Vec::new();
    if snapshot {
        for link in &c.followed_other_device {
            out.push(format!(
                "{link}: followed onto another filesystem, which the snapshot does not \
                 cover; its files were read live (not snapshot-consistent)"
            ));
        }
    }
    for link in &c.not_followed {
        out.push(format!("symlink not followed, recorded as a link: {link}"));
    }
    for link in &c.link_paths {
        out.push(format!(
            "symlink recorded as a link (restored as a link; what it points to is \
             captured only if it is in the tree): {link}"
        ));
    }
    for special in &c.special_paths {
        out.push(format!("{special}: recorded, not read, not restored"));
    }
    if c.vanished > 0 {
        out.push(format!(
            "{} attachment files vanished while the store was read (deleted after the dump; \
             harmless unless the dump references them)",
            c.vanished
        ));
    }
    for path in &c.unstable_paths {
        out.push(format!("{path}: changed on every read, not captured"));
    }
    for why in &c.unreadable {
        out.push(format!("not captured: {why}"));
    }
    out
}

fn config_summary(c: &ConfigInfo) -> ConfigSummary {
    ConfigSummary {
        source: c.source.clone(),
        entries: c.entries.len(),
        bytes: c.entries.iter().map(|e| e.size).sum(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_link_onto_another_filesystem_is_a_warning_only_with_a_snapshot() {
        let stats = attachments::CaptureStats {
            followed_dirs: 1,
            followed: vec!["3 -> /srv/disk2/3".into()],
            followed_other_device: vec!["3 -> /srv/disk2/3".into()],
            link_paths: vec!["9/x/rel -> ../../1".into()],
            not_followed: vec!["9/x/up -> ../..: a loop".into()],
            special_paths: vec!["4/0/fifo: a FIFO".into()],
            ..Default::default()
        };
        let with = capture_warnings(&stats, true);
        assert!(
            with.iter().any(
                |w| w.starts_with("3 -> /srv/disk2/3") && w.contains("not snapshot-consistent")
            ),
            "{with:#?}"
        );
        let without = capture_warnings(&stats, false);
        assert!(
            !without.iter().any(|w| w.contains("snapshot")),
            "{without:#?}"
        );
        for needle in ["9/x/rel -> ../../1", "9/x/up -> ../..", "4/0/fifo: a FIFO"] {
            assert!(
                without.iter().any(|w| w.contains(needle)),
                "{needle}: {without:#?}"
            );
        }
    }
}
