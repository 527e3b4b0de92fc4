//! `kcbackup restore SET`: the dump into a database, the attachment tree and
//! the config directory into directories; each target optional, at least one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::attachments::read_index;
use crate::error::{Damaged, config_error, damaged};
use crate::repo::manifest::Manifest;
use crate::repo::{Repository, SetInfo};
use crate::restorable;
use crate::restore::bucket::{self, BucketRestore};
use crate::restore::config::restore_config;
use crate::restore::database::{self, DatabaseRestore};
use crate::restore::files::{TreeRestore, check_index, is_non_empty, prepare_target, restore_tree};
use crate::restore::s3;
use crate::settings::{MysqlTarget, Settings};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// A set id or `latest`.
    pub set: String,
    /// Load the dump into this database on `mysql`.
    pub to_database: Option<String>,
    pub to_attachments: Option<PathBuf>,
    pub to_config: Option<PathBuf>,
    /// For an s3 set: PUT its objects into this bucket.
    pub to_bucket: Option<String>,
    /// The S3 server for `to_bucket` (default: the set's endpoint).
    pub s3_endpoint: Option<String>,
    /// The server to restore into (default: the configured one).
    pub mysql: Option<MysqlTarget>,
    pub force: bool,
    /// Connections loading tables at once (default: [`database::default_jobs`]).
    pub jobs: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub set: String,
    pub database: Option<DatabaseRestore>,
    pub attachments: Option<TreeRestore>,
    /// An s3 set's objects PUT into a bucket (`--to-bucket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketRestore>,
    pub config: Option<TreeRestore>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub seconds: f64,
}

pub fn run(settings: &Settings, opts: &RestoreOptions) -> Result<RestoreReport> {
    crate::signals::install()?;
    restore(settings, opts).map_err(crate::signals::explain)
}

fn restore(settings: &Settings, opts: &RestoreOptions) -> Result<RestoreReport> {
    if opts.to_database.is_none()
        && opts.to_attachments.is_none()
        && opts.to_config.is_none()
        && opts.to_bucket.is_none()
    {
        return config_error(
            "restore needs at least one of --to-database, --to-attachments, --to-bucket, \
             --to-config",
        );
    }
    let started = Instant::now();
    let repo = Repository::open_at(&settings.repository)?;
    let mut lock = repo.lock_shared("restore")?;
    let set = repo.resolve(&opts.set)?;
    lock.describe(&format!("restore of set {}", set.id));
    let manifest = set
        .manifest
        .clone()
        .map_err(|e| Damaged(format!("set {} cannot be restored: {e}", set.id)))?;
    let mut report = RestoreReport {
        set: set.id.clone(),
        database: None,
        attachments: None,
        bucket: None,
        config: None,
        notes: Vec::new(),
        seconds: 0.0,
    };

    // Every target and every path of the set is checked before anything
    // is written: a refusal leaves all targets as they were. What makes a
    // set restorable is `restorable`'s one definition, shared with backup,
    // verify and drill.
    let findings = restorable::check_parts(
        set.local_dir(),
        &manifest,
        &repo.objects()?,
        opts.to_attachments.is_some() || opts.to_bucket.is_some(),
    );
    if !findings.is_empty() {
        return damaged(format!(
            "set {} cannot be restored: {}",
            set.id,
            findings.summary()
        ));
    }
    let db_target = opts.to_database.as_ref().map(|name| {
        let mut target = opts.mysql.clone().unwrap_or_else(|| settings.mysql.clone());
        target.database = name.clone();
        target
    });
    if let Some(target) = &db_target {
        database::check_target(target, opts.force)?;
    }
    let index = (!manifest.attachments.index_file.is_empty())
        .then(|| set.local_path(&manifest.attachments.index_file));
    if let Some(dir) = &opts.to_attachments {
        if let Some(index) = &index {
            // The set's own index refused (a path through a link, a key out
            // of order): damage.
            read_index(index)
                .and_then(|entries| match restorable::is_s3(&manifest) {
                    true => s3::check_index(entries),
                    false => check_index(entries),
                })
                .map_err(Damaged::from)?;
        }
        refuse_non_empty(dir, opts.force)?;
    }
    let bucket_client = match (&opts.to_bucket, &manifest.attachments.s3) {
        (None, _) => None,
        (Some(_), None) => {
            return config_error(format!(
                "--to-bucket restores the objects of an s3 attachment store; set {} holds a \
                 file tree (use --to-attachments)",
                set.id
            ));
        }
        (Some(bucket), Some(source)) => {
            let client = bucket::client_for(settings, source, opts.s3_endpoint.as_deref())?;
            match client.head_bucket(bucket) {
                // A new server after a disaster: the bucket is made.
                Err(e) if e.is_not_found() => {
                    client.create_bucket(bucket)?;
                    report.notes.push(format!(
                        "bucket {bucket} did not exist at {}; created it",
                        client.endpoint()
                    ));
                }
                other => other?,
            }
            let target = bucket::Target {
                client: &client,
                bucket,
                prefix: &source.prefix,
            };
            if !opts.force {
                bucket::refuse_non_empty(&target)?;
            }
            Some(client)
        }
    };
    if let Some(dir) = &opts.to_config {
        check_index(manifest.config.entries.iter().cloned().map(Ok))
            .context("in the set's config archive listing")?;
        refuse_non_empty(dir, opts.force)?;
    }

    // The dump and the attachment tree go in at the same time: the load
    // keeps the database server busy, the tree the disk. The load runs as
    // a plain client session: nothing of the server's settings is changed.
    let store = repo.objects()?;
    let (database, tree) = std::thread::scope(|scope| {
        let tree = opts.to_attachments.as_ref().map(|dir| {
            let (repo, set, manifest, index) = (&repo, &set, &manifest, &index);
            scope.spawn(move || match index {
                Some(_) => attachments(repo, set, manifest, dir, opts.force).map(Some),
                None => Ok(None),
            })
        });
        let database = db_target
            .as_ref()
            .map(|target| {
                let jobs = opts.jobs.unwrap_or_else(database::default_jobs);
                database::restore(set.local_dir(), &manifest, &store, target, opts.force, jobs)
            })
            .transpose();
        let tree = tree.map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the attachment restore panicked")))
        });
        (database, tree)
    });
    // The database's error first, as when one followed the other.
    report.database = database?;
    if let Some(tree) = tree {
        report.attachments = Some(match tree? {
            Some(tree) => tree,
            None => {
                report.notes.push("the set holds no attachment tree".into());
                TreeRestore::default()
            }
        });
    }
    crate::signals::check()?;
    if let (Some(client), Some(bucket), Some(source)) =
        (&bucket_client, &opts.to_bucket, &manifest.attachments.s3)
    {
        let target = bucket::Target {
            client,
            bucket,
            prefix: &source.prefix,
        };
        let index = set.local_path(&manifest.attachments.index_file);
        report.bucket = Some(bucket::restore(
            &target,
            &repo.objects()?,
            &index,
            opts.force,
        )?);
    }
    crate::signals::check()?;
    if let Some(dir) = &opts.to_config {
        let mut tree = TreeRestore::default();
        if manifest.config.file.is_empty() {
            report.notes.push("the set holds no config archive".into());
        } else {
            prepare_target(
                dir,
                manifest.config.entries.iter().cloned().map(Ok),
                opts.force,
                &mut tree,
            )?;
            restore_config(
                &set.local_path(&manifest.config.file),
                &manifest.config.entries,
                dir,
                &mut tree,
                &mut report.notes,
            )?;
        }
        report.config = Some(tree);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A non-empty directory is a usage error without `--force`.
fn refuse_non_empty(dir: &Path, force: bool) -> Result<()> {
    if !force && is_non_empty(dir)? {
        return config_error(format!(
            "{} is not empty; restore refuses to mix trees (use --force to move \
             what the set does not hold into a quarantine folder beside it)",
            dir.display()
        ));
    }
    Ok(())
}

/// Restores the set's attachment tree into `dir`, after checking every
/// path of its index.
pub fn attachments(
    repo: &Repository,
    set: &SetInfo,
    manifest: &Manifest,
    dir: &Path,
    force: bool,
) -> Result<TreeRestore> {
    let index = set.local_path(&manifest.attachments.index_file);
    let mut tree = TreeRestore::default();
    if restorable::is_s3(manifest) {
        // Objects by key, not a tree: written as files named by key.
        s3::check_index(read_index(&index)?)?;
        s3::prepare_dir(dir, force, &mut tree)?;
        s3::restore_to_dir(&repo.objects()?, read_index(&index)?, dir, &mut tree)
            .with_context(|| format!("while restoring objects into {}", dir.display()))?;
        return Ok(tree);
    }
    check_index(read_index(&index)?)?;
    prepare_target(dir, read_index(&index)?, force, &mut tree)?;
    let store = repo.objects()?;
    restore_tree(&store, read_index(&index)?, dir, &mut tree)
        .with_context(|| format!("while restoring attachments into {}", dir.display()))?;
    Ok(tree)
}
