//! The backup coordinator. It reads like the procedure it performs: lock,
//! dump the database FIRST (its snapshot defines what must be present),
//! capture the rest, prove completeness, write the manifest last, publish.

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;
use serde::Serialize;

use crate::dump::{self, DumpFiles};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::manifest::{DatabaseInfo, FORMAT, KopanoInfo, Manifest, Phase, SetStatus};
use crate::settings::Settings;

/// File names inside a set.
pub const DUMP_FILE: &str = "db.sql.zst";
pub const REFERENCES_FILE: &str = "singleinstances.jsonl.zst";
pub const LOB_FILE: &str = "lob.jsonl.zst";

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tag: Option<String>,
}

/// What `backup` reports (also its `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub set: String,
    pub status: SetStatus,
    pub db: DbSummary,
    pub kopano_version: Option<String>,
    pub storage_backend: Option<String>,
    pub duration_s: f64,
    pub phases: Vec<Phase>,
    pub warnings: Vec<String>,
    /// Hidden work directories of crashed earlier runs that were removed.
    pub removed_leftovers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DbSummary {
    pub bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub tables: usize,
    pub rows: u64,
}

pub fn run(
    settings: &Settings,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut phases = Vec::new();
    let mut warnings = Vec::new();

    // 1. One writer at a time; clear what a crashed run left behind.
    let repo = Repository::open_or_create(&settings.repository)?;
    let lock = repo.lock_exclusive()?;
    let removed_leftovers = repo.remove_leftovers(&lock)?;
    for name in &removed_leftovers {
        tracing::warn!("removed {name}, left by an earlier run that did not finish");
    }
    let set = repo.begin_set(&lock, started)?;

    // 2. The database first: what its snapshot references must be present later.
    let files = DumpFiles {
        dump: &set.path(DUMP_FILE),
        singleinstances: &set.path(REFERENCES_FILE),
        lob: &set.path(LOB_FILE),
    };
    let db = dump::run(&settings.mysql, &files, progress, |_| {})
        .context("the database dump failed; no set was published")?;
    phases.push(Phase {
        name: "dump".into(),
        seconds: db.seconds,
    });
    let findings = &db.findings;
    if let Some(dumped) = &findings.attachment_storage {
        let configured = settings.attachment_storage.as_str();
        if configured != "auto" && configured != dumped {
            warnings.push(format!(
                "server.cfg says attachment_storage = {configured}, but the database uses {dumped}: \
                 kopano-server would refuse to start with this configuration"
            ));
        }
    }

    // 3. The manifest last; then one rename makes the set visible.
    let status = SetStatus::Complete;
    let mut manifest = Manifest {
        format: FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: hostname(),
        set: set.id().to_string(),
        tag: opts.tag.clone(),
        status,
        started,
        finished: Utc::now(),
        phases: phases.clone(),
        kopano: KopanoInfo {
            version: findings.kopano_version.map(|v| v.to_string()),
            storage_backend: findings.attachment_storage.clone(),
            configured_storage: settings.attachment_storage.clone(),
            attachment_path: settings.attachment_path.clone(),
            config_dir: settings.config_dir.clone(),
            server_cfg: settings.server_cfg.clone(),
        },
        database: DatabaseInfo {
            database: settings.mysql.database.clone(),
            server_version: db.server_version.clone(),
            command: db.command.clone(),
            binlog: db.binlog.clone(),
            transaction_started: db.transaction_started,
            file: DUMP_FILE.into(),
            bytes: db.bytes,
            sha256: db.sha256.clone(),
            stored_bytes: db.stored_bytes,
            stored_sha256: db.stored_sha256.clone(),
            references_file: REFERENCES_FILE.into(),
            lob_file: LOB_FILE.into(),
            findings: db.findings.clone(),
        },
        warnings: warnings.clone(),
        files: Vec::new(),
    };
    let set_id = set.id().to_string();
    set.publish(&mut manifest)?;
    drop(lock);

    Ok(BackupReport {
        set: set_id,
        status,
        db: DbSummary {
            bytes: db.bytes,
            stored_bytes: db.stored_bytes,
            sha256: db.sha256,
            tables: db.findings.row_counts.len(),
            rows: db.findings.row_counts.values().sum(),
        },
        kopano_version: manifest.kopano.version.clone(),
        storage_backend: manifest.kopano.storage_backend.clone(),
        duration_s: clock.elapsed().as_secs_f64(),
        phases,
        warnings,
        removed_leftovers,
    })
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}
