//! `kcbackup drill`: proves a set restores. It loads the set into a
//! throwaway MariaDB and a scratch directory, checks the restored copy the
//! way kopano-server would read it, times every phase (the recovery time),
//! records the result in the repository, and cleans up.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::attachments::{EntryKind, read_index};
use crate::dump::scanner::KopanoVersion;
use crate::layout::Layout;
use crate::mysql::Client;
use crate::repo::Repository;
use crate::repo::digest::HashReader;
use crate::repo::manifest::Manifest;
use crate::restore::config::restore_config;
use crate::restore::database;
use crate::restore::files::TreeRestore;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::settings::Settings;

/// Where drill reports are kept, one write-once file per drill.
pub const DRILLS_DIR: &str = "drills";
/// How many missing ids a failed check lists.
const LISTED: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// A set id or `latest`.
    pub set: String,
    /// Leave the scratch directory and the stopped server's files behind.
    pub keep: bool,
    /// Where to make the scratch directory (default: the system temp dir).
    pub scratch_parent: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Durations {
    pub database_load: f64,
    pub attachment_restore: f64,
    pub config_restore: f64,
    pub checks: f64,
    /// The measured recovery time: everything from start to verdict.
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
}

pub fn run(settings: &Settings, opts: &DrillOptions) -> Result<DrillReport> {
    let clock = Instant::now();
    let started = Utc::now();
    let repo = Repository::open(&settings.repository)?;
    let _lock = repo.lock_shared()?;
    let set = repo.resolve(if opts.set.is_empty() {
        "latest"
    } else {
        &opts.set
    })?;
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
    };
    let manifest = match &set.manifest {
        Ok(m) => m.clone(),
        Err(e) => {
            report.checks.push(failed("manifest", e.clone()));
            return finish(&repo, report, clock);
        }
    };

    // 1. A throwaway server and a scratch directory, removed by their guards.
    let mut builder = tempfile::Builder::new();
    builder.prefix("kcbackup-drill-");
    let scratch = match &opts.scratch_parent {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("while creating the drill's scratch directory")?;
    let sandbox = Sandbox::start(&SandboxOptions {
        keep: opts.keep,
        ..Default::default()
    })
    .context("while starting the drill's throwaway MariaDB")?;
    let target = sandbox.root_target("kopano");

    // 2. Restore, timing each phase; a failed restore is a failed check.
    let t = Instant::now();
    match database::restore(&set.dir, &manifest, &target, false) {
        Ok(db) => {
            report.sql_bytes = db.bytes;
            report.checks.push(passed(
                "database load",
                format!("{} bytes of SQL", db.bytes),
            ));
        }
        Err(e) => report
            .checks
            .push(failed("database load", format!("{e:#}"))),
    }
    report.durations.database_load = t.elapsed().as_secs_f64();

    let attachments = scratch.path().join("attachments");
    let t = Instant::now();
    if manifest.attachments.index_file.is_empty() {
        fs::create_dir_all(&attachments)?;
    } else {
        match super::restore::attachments(&repo, &set.dir, &manifest, &attachments, false) {
            Ok(tree) => {
                report.files = tree.files;
                report.attachment_bytes = tree.bytes;
                report.checks.push(passed(
                    "attachment restore",
                    format!(
                        "{} files, {} bytes, every checksum verified",
                        tree.files, tree.bytes
                    ),
                ));
            }
            Err(e) => report
                .checks
                .push(failed("attachment restore", format!("{e:#}"))),
        }
    }
    report.durations.attachment_restore = t.elapsed().as_secs_f64();

    let t = Instant::now();
    if !manifest.config.file.is_empty() {
        let mut tree = TreeRestore::default();
        let mut notes = Vec::new();
        let check = match restore_config(
            &set.dir.join(&manifest.config.file),
            &manifest.config.entries,
            &scratch.path().join("config"),
            &mut tree,
            &mut notes,
        ) {
            Ok(()) => passed(
                "config restore",
                format!("{} files, checksums verified", tree.files),
            ),
            Err(e) => failed("config restore", format!("{e:#}")),
        };
        report.checks.push(check);
    }
    report.durations.config_restore = t.elapsed().as_secs_f64();

    // 3. Check the restored copy as kopano-server would read it.
    let t = Instant::now();
    if report.checks.iter().all(|c| c.ok) {
        let client = Client::new(&target)?;
        report.checks.extend(check_database(
            &client,
            &manifest,
            &mut report.tables,
            &mut report.rows,
        ));
        report.checks.push(check_references(
            &client,
            &manifest,
            &attachments,
            &mut report.referenced,
        ));
        if !manifest.attachments.index_file.is_empty() {
            report.checks.push(check_files(
                &set.dir.join(&manifest.attachments.index_file),
                &attachments,
            ));
        }
    }
    report.durations.checks = t.elapsed().as_secs_f64();

    // 4. Clean up (unless kept), then record the verdict.
    sandbox.stop()?;
    if opts.keep {
        report.kept = Some(scratch.keep());
    } else {
        scratch
            .close()
            .context("while removing the drill's scratch directory")?;
    }
    finish(&repo, report, clock)
}

fn passed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail,
    }
}

fn failed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail,
    }
}

/// Sets the verdict and total time, and writes the report into the repository.
fn finish(repo: &Repository, mut report: DrillReport, clock: Instant) -> Result<DrillReport> {
    report.ok = !report.checks.is_empty() && report.checks.iter().all(|c| c.ok);
    report.durations.total = clock.elapsed().as_secs_f64();
    let dir = repo.root().join(DRILLS_DIR);
    fs::create_dir_all(&dir)?;
    let name = format!(
        "{}--{}.json",
        report.set,
        report.started.format("%Y%m%dT%H%M%S%.3fZ")
    );
    fs::write(dir.join(name), serde_json::to_vec_pretty(&report)?)
        .context("while recording the drill in the repository")?;
    Ok(report)
}

/// The newest drill of each set, for `list`.
pub fn last_drills(repo_root: &Path) -> std::collections::BTreeMap<String, DrillReport> {
    let mut last = std::collections::BTreeMap::new();
    let Ok(entries) = fs::read_dir(repo_root.join(DRILLS_DIR)) else {
        return last;
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for path in names {
        if let Some(report) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<DrillReport>(&b).ok())
        {
            last.insert(report.set.clone(), report);
        }
    }
    last
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Row counts, Kopano version and storage backend against the manifest.
fn check_database(
    client: &Client,
    manifest: &Manifest,
    tables: &mut usize,
    rows: &mut u64,
) -> Vec<Check> {
    let expected = &manifest.database.findings.row_counts;
    let mut mismatches = Vec::new();
    for (table, want) in expected {
        let got = client
            .query_value(&format!("SELECT COUNT(*) FROM {}", quote_ident(table)))
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok());
        *rows += got.unwrap_or(0);
        if got != Some(*want) {
            mismatches.push(format!(
                "{table}: {want} in the dump, {} restored",
                got.map_or("none".into(), |g| g.to_string())
            ));
        }
    }
    *tables = expected.len();
    let mut checks = vec![if mismatches.is_empty() {
        passed(
            "row counts",
            format!(
                "{} tables, {} rows, all equal to the dump's",
                expected.len(),
                rows
            ),
        )
    } else {
        failed("row counts", mismatches.join("; "))
    }];

    let version = client
        .query("SELECT major, minor, micro, revision, databaserevision FROM versions")
        .map(|out| {
            out.lines()
                .filter_map(|l| {
                    let v: Vec<u32> = l.split('\t').filter_map(|x| x.parse().ok()).collect();
                    (v.len() == 5).then(|| KopanoVersion {
                        major: v[0],
                        minor: v[1],
                        micro: v[2],
                        revision: v[3],
                        databaserevision: v[4],
                    })
                })
                .max()
                .map(|v| v.to_string())
        });
    checks.push(match version {
        Ok(v) if v == manifest.kopano.version => passed("kopano version", v.unwrap_or_default()),
        Ok(v) => failed(
            "kopano version",
            format!("restored {v:?}, manifest {:?}", manifest.kopano.version),
        ),
        Err(e) => failed("kopano version", format!("{e:#}")),
    });
    let backend =
        client.query_value("SELECT value FROM settings WHERE name = 'attachment_storage'");
    checks.push(match backend {
        Ok(b) if b == manifest.kopano.storage_backend => {
            passed("storage backend", b.unwrap_or_default())
        }
        Ok(b) => failed(
            "storage backend",
            format!(
                "restored {b:?}, manifest {:?}",
                manifest.kopano.storage_backend
            ),
        ),
        Err(e) => failed("storage backend", format!("{e:#}")),
    });
    checks
}

/// Every instance the RESTORED `singleinstances` references has its data
/// where kopano-server will look for it.
fn check_references(
    client: &Client,
    manifest: &Manifest,
    tree: &Path,
    referenced: &mut u64,
) -> Check {
    let name = "attachments present";
    let Some(backend) = &manifest.kopano.storage_backend else {
        return failed(name, "the manifest names no storage backend".into());
    };
    let layout = match Layout::parse(backend) {
        Ok(l) => l,
        Err(e) => return failed(name, format!("{e:#}")),
    };
    let guid = manifest
        .database
        .findings
        .server_guid
        .clone()
        .unwrap_or_default();
    let lob_ok = if layout == Layout::Database {
        let mut ok = HashSet::new();
        let r = client.for_each_row(
            "SELECT instanceid, COUNT(*), MIN(chunkid), MAX(chunkid) FROM lob GROUP BY instanceid, tag",
            |row| {
                let v: Vec<u64> = row.split('\t').filter_map(|x| x.parse().ok()).collect();
                if v.len() == 4 && v[2] == 0 && v[3] + 1 == v[1] {
                    ok.insert(v[0] as u32);
                }
                Ok(())
            },
        );
        if let Err(e) = r {
            return failed(name, format!("{e:#}"));
        }
        ok
    } else {
        HashSet::new()
    };
    let mut missing = Vec::new();
    let mut missing_count = 0u64;
    let mut last = None;
    let r = client.for_each_row(
        "SELECT instanceid, IFNULL(filename, '') FROM singleinstances ORDER BY instanceid",
        |row| {
            let mut cols = row.splitn(2, '\t');
            let id: u32 = cols
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| anyhow!("bad instanceid in {row:?}"))?;
            let filename = cols.next().unwrap_or_default();
            let present = match layout {
                Layout::FilesV1 { l1, l2 } => {
                    if last == Some(id) {
                        return Ok(());
                    }
                    Layout::v1_candidates(l1, l2, id)
                        .iter()
                        .any(|p| readable(&tree.join(p)))
                }
                Layout::FilesV2 => {
                    !filename.is_empty()
                        && readable(&tree.join(filename).join("content"))
                        && tree
                            .join(filename)
                            .join("holder")
                            .join(Layout::v2_holder_name(
                                &hex::decode(&guid).unwrap_or_default(),
                                id,
                            ))
                            .exists()
                }
                Layout::Database => lob_ok.contains(&id),
                Layout::S3 => false,
            };
            if last != Some(id) {
                *referenced += 1;
            }
            if !present && last != Some(id) {
                missing_count += 1;
                if missing.len() < LISTED {
                    missing.push(id.to_string());
                }
            }
            last = Some(id);
            Ok(())
        },
    );
    match r {
        Err(e) => failed(name, format!("{e:#}")),
        Ok(()) if missing_count == 0 => passed(
            name,
            format!(
                "{referenced} referenced instances, all readable where kopano-server looks ({layout})"
            ),
        ),
        Ok(()) => failed(
            name,
            format!(
                "{missing_count} of {referenced} referenced instances missing: {}",
                missing.join(", ")
            ),
        ),
    }
}

fn readable(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| f.metadata().is_ok_and(|m| m.is_file()))
}

/// Every restored file has the recorded checksum, and Kopano's gzip files
/// decode to the end (all members).
fn check_files(index: &Path, tree: &Path) -> Check {
    let name = "attachment checksums";
    let mut bad = Vec::new();
    let mut checked = 0u64;
    let entries = match read_index(index) {
        Ok(e) => e,
        Err(e) => return failed(name, format!("{e:#}")),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return failed(name, format!("{e:#}")),
        };
        if entry.kind != EntryKind::File {
            continue;
        }
        checked += 1;
        let path = tree.join(&entry.path);
        let result = (|| -> Result<()> {
            let mut reader = HashReader::new(File::open(&path)?);
            io::copy(&mut reader, &mut io::sink())?;
            let (_, sha) = reader.finish();
            if Some(sha.as_str()) != entry.sha256.as_deref() {
                anyhow::bail!("checksum differs from the set's");
            }
            if entry.path.ends_with(".gz") {
                let mut gz =
                    flate2::read::MultiGzDecoder::new(io::BufReader::new(File::open(&path)?));
                io::copy(&mut gz, &mut io::sink()).context("gzip does not decode")?;
            }
            Ok(())
        })();
        if let Err(e) = result
            && bad.len() < LISTED
        {
            bad.push(format!("{}: {e:#}", entry.path));
        }
    }
    if bad.is_empty() {
        passed(
            name,
            format!("{checked} files re-read: checksums equal, gzip files decode"),
        )
    } else {
        failed(name, bad.join("; "))
    }
}
