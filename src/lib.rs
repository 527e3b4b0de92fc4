//! kcbackup: consistent, verifiable backups of a Kopano Core server.
//!
//! The database is dumped first (one `--single-transaction` dump, streamed
//! through a hasher, a compressor and a scanner), then the attachment store
//! and `/etc/kopano` are captured; the manifest, written last, proves that
//! every attachment the dump references is present.
//!
//! Main types: [`settings::Settings`] (validated configuration),
//! [`dump::DumpReport`] (what the dump produced), [`repo::Repository`]
//! (sets, objects, lock, config; all its I/O through [`repo::Storage`]),
//! [`repo::manifest::Manifest`], the attachment index
//! ([`attachments::IndexEntry`]) and the proof ([`crossref::CrossRef`]).

pub mod attachments;
pub mod cancel;
pub mod census;
pub mod cli;
pub mod commands;
pub mod config_archive;
pub mod crossref;
pub mod dump;
pub mod error;
pub mod generate;
pub mod generator;
pub mod hooks;
pub mod layout;
pub mod metrics;
pub mod mysql;
pub mod notify;
pub mod operation;
pub mod output;
pub mod preflight;
pub mod process;
pub mod progress;
pub mod repo;
pub mod restorable;
pub mod restore;
pub mod retention;
pub mod s3;
pub mod sandbox;
pub mod scratch;
pub mod services;
pub mod settings;
pub mod signals;
pub mod snapshot;
pub mod walk;
pub mod watchdog;

use std::io::IsTerminal;

use anyhow::Result;

use cli::{Cli, Command};
use error::Exit;
use operation::Operation;

/// Runs one command line; the exit code follows the report.
pub fn run(cli: Cli) -> Result<Exit> {
    let settings = || settings::Settings::load(&cli.overrides());
    match &cli.command {
        Command::Generate(cli::GenerateCommand::Man { dir }) => {
            for path in generate::man_pages(dir)? {
                println!("{}", path.display());
            }
            Ok(Exit::Ok)
        }
        Command::Generate(cli::GenerateCommand::Completions { shell }) => {
            generate::completions(*shell, &mut std::io::stdout().lock())?;
            Ok(Exit::Ok)
        }
        Command::Backup(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Backup, || {
                let progress = progress::for_terminal();
                let opts = commands::backup::BackupOptions {
                    tag: args.tag.clone(),
                    rehash: args.rehash,
                    lock_wait: std::time::Duration::from_secs(args.lock.lock_wait),
                    upgrade: None,
                };
                let report = commands::backup::run(&settings, &opts, progress.as_ref())?;
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                if args.output.json {
                    output::json(&report)?;
                } else if std::io::stdout().is_terminal() {
                    output::backup_summary(&report);
                }
                let exit = match report.status {
                    repo::manifest::SetStatus::Complete => Exit::Ok,
                    repo::manifest::SetStatus::Incomplete => {
                        output::incomplete(&report);
                        Exit::Incomplete
                    }
                };
                Ok((exit, operation::backup_facts(&settings, &report)))
            })
        }
        Command::Verify(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Verify, || {
                let progress = progress::for_terminal();
                let opts = commands::verify::VerifyOptions {
                    set: args.set.clone(),
                };
                let report = commands::verify::run(&settings, &opts, progress.as_ref())?;
                if args.output.json {
                    output::json(&report)?;
                } else {
                    output::verify_summary(&report);
                }
                let exit = if report.ok {
                    Exit::Ok
                } else {
                    Exit::Incomplete
                };
                Ok((exit, operation::verify_facts(&settings, &report)))
            })
        }
        Command::Restore(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Restore, || {
                let opts = commands::restore::RestoreOptions {
                    set: args.set.clone(),
                    to_database: args.to_database.clone(),
                    to_attachments: args.to_attachments.clone(),
                    to_config: args.to_config.clone(),
                    to_bucket: args.to_bucket.clone(),
                    s3_endpoint: args.s3_endpoint.clone(),
                    mysql: restore_target(&settings, args)?,
                    force: args.force,
                    jobs: args.jobs.map(usize::from),
                };
                let report = commands::restore::run(&settings, &opts)?;
                if args.output.json {
                    output::json(&report)?;
                } else {
                    output::restore_summary(&report);
                }
                Ok((Exit::Ok, operation::restore_facts(&settings, &report)))
            })
        }
        Command::Drill(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Drill, || {
                let opts = commands::drill::DrillOptions {
                    set: args.set.clone(),
                    keep: args.keep,
                    scratch_parent: args.scratch.clone(),
                    jobs: args.jobs.map(usize::from),
                };
                let report = commands::drill::run(&settings, &opts)?;
                if args.output.json {
                    output::json(&report)?;
                } else {
                    output::drill_summary(&report);
                }
                let exit = if report.ok {
                    Exit::Ok
                } else {
                    Exit::Incomplete
                };
                Ok((exit, operation::drill_facts(&settings, &report)))
            })
        }
        Command::Prune(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Prune, || {
                let policy = if args.has_rules() {
                    Some(cli_policy(&settings, args)?)
                } else {
                    None
                };
                let opts = commands::prune::PruneOptions {
                    policy,
                    utc: args.utc,
                    dry_run: args.dry_run,
                    lock_wait: std::time::Duration::from_secs(args.lock.lock_wait),
                };
                let report = commands::prune::prune(&settings, &opts)?;
                prune_done(&settings, &report, args.output.json)
            })
        }
        Command::Forget(args) => {
            let settings = settings()?;
            operation::run(&settings, Operation::Forget, || {
                let opts = commands::prune::ForgetOptions {
                    sets: args.sets.clone(),
                    force: args.force,
                    dry_run: args.dry_run,
                    lock_wait: std::time::Duration::from_secs(args.lock.lock_wait),
                };
                let report = commands::prune::forget(&settings, &opts)?;
                prune_done(&settings, &report, args.output.json)
            })
        }
        Command::Copy(args) => {
            let settings = settings()?;
            let Some(to) = args.to.clone().or_else(|| settings.copy_to.clone()) else {
                if args.if_configured {
                    return Ok(Exit::Ok);
                }
                return error::config_error("copy needs --to NAME (or [copy] to in the config)");
            };
            let lock_wait = std::time::Duration::from_secs(args.lock.lock_wait);
            let opts = commands::copy::CopyOptions {
                which: match &args.set {
                    Some(set) => commands::copy::Which::One(set.clone()),
                    None => commands::copy::Which::All,
                },
                to: to.clone(),
                lock_wait,
            };
            let report = commands::copy::run(&settings, &opts).map_err(signals::explain)?;
            if args.output.json && !args.prune {
                output::json(&report)?;
            } else if !args.output.json {
                output::copy_summary(&report);
            }
            if report.failed() {
                if args.output.json && args.prune {
                    output::json(&report)?;
                }
                return Ok(Exit::Incomplete);
            }
            if !args.prune {
                return Ok(Exit::Ok);
            }
            let target = settings.for_repository(&to)?;
            let pruned = commands::prune::prune(
                &target,
                &commands::prune::PruneOptions {
                    policy: None,
                    utc: false,
                    dry_run: false,
                    lock_wait,
                },
            )
            .map_err(signals::explain)?;
            if args.output.json {
                output::json(&serde_json::json!({ "copy": report, "prune": pruned }))?;
            } else {
                output::prune_summary(&pruned);
            }
            Ok(match pruned.sweep_skipped {
                Some(_) => Exit::Incomplete,
                None => Exit::Ok,
            })
        }
        Command::Unlock(args) => {
            let settings = settings()?;
            let storage = repo::storage::open(&settings.repository)?;
            let report = storage.unlock_stale()?;
            if args.output.json {
                output::json(&report)?;
            }
            for r in &report.removed {
                eprintln!("kcbackup: removed the lock of {r}");
            }
            if report.refused.is_empty() {
                return Ok(Exit::Ok);
            }
            Err(anyhow::anyhow!(
                "the lock of {} is held by a run that is not known to be gone, so it stays                  (wait for it, or for its lock to go stale after {} min): {}",
                settings.repository,
                repo::storage::s3::LOCK_STALE.as_secs() / 60,
                report.refused.join("; ")
            ))
        }
        Command::List(args) => {
            let settings = settings()?;
            if let Some(set) = &args.long {
                let repo = repo::Repository::open_at(&settings.repository)?;
                let info = repo.resolve(set)?;
                let manifest = info
                    .manifest
                    .map_err(|e| anyhow::anyhow!("set {} is damaged: {e}", info.id))?;
                let stats = output::SetStats::of(&manifest);
                if args.json {
                    output::json(&stats)?;
                } else {
                    output::set_stats(&stats);
                }
                return Ok(Exit::Ok);
            }
            let lines = commands::list::run(&settings)?;
            if args.json {
                output::json(&lines)?;
            } else {
                output::list(&lines, repository_bytes(&settings)?);
            }
            Ok(Exit::Ok)
        }
        Command::Upgrade(cli::UpgradeCommand::Prepare(args)) => {
            let settings = settings()?;
            let progress = progress::for_terminal();
            let opts = commands::upgrade::PrepareOptions {
                keep_running: args.keep_running,
            };
            let report = commands::upgrade::prepare(&settings, &opts, progress.as_ref())?;
            if args.output.json {
                output::json(&report)?;
            } else {
                commands::upgrade::print_prepare(&report);
            }
            Ok(Exit::Ok)
        }
        Command::Upgrade(cli::UpgradeCommand::Finish(args)) => {
            let settings = settings()?;
            let report = commands::upgrade::finish(&settings)?;
            if args.output.json {
                output::json(&report)?;
            } else {
                commands::upgrade::print_finish(&report);
            }
            Ok(report.exit())
        }
        Command::Upgrade(cli::UpgradeCommand::Rollback(args)) => {
            let settings = settings()?;
            let report = commands::upgrade::rollback(&settings, args.set.as_deref(), args.yes)?;
            if args.output.json {
                output::json(&report)?;
            } else {
                commands::upgrade::print_rollback(&report);
            }
            Ok(if report.failed.is_empty() {
                Exit::Ok
            } else {
                Exit::Failure
            })
        }
        Command::Demo(args) => {
            let progress = progress::for_terminal();
            let opts = commands::demo::DemoOptions { keep: args.keep };
            let report = commands::demo::run(&opts, progress.as_ref())?;
            if args.output.json {
                output::json(&report)?;
            } else {
                output::demo_summary(&report);
            }
            Ok(if report.ok() {
                Exit::Ok
            } else {
                Exit::Incomplete
            })
        }
    }
}

/// What the repository holds in bytes: the directory's size, or on object
/// storage the sum of a listing (only `list` asks, never a nightly run).
fn repository_bytes(settings: &settings::Settings) -> Result<u64> {
    if let Some(root) = settings.repository.local() {
        return Ok(metrics::tree_bytes(root));
    }
    let storage = repo::storage::open(&settings.repository)?;
    let mut total = 0;
    storage.list("", &mut |_, bytes| {
        total += bytes;
        Ok(())
    })?;
    Ok(total)
}

/// The rules the prune command line names; keep_incomplete stays as
/// configured (it is not a rule).
fn cli_policy(settings: &settings::Settings, args: &cli::PruneArgs) -> Result<retention::Policy> {
    let keep_within = match &args.keep_within {
        Some(text) => Some(
            retention::Within::parse(text)
                .map_err(|e| error::ConfigError(format!("--keep-within: {e}")))?,
        )
        .filter(|w| !w.is_zero()),
        None => None,
    };
    Ok(retention::Policy {
        keep_last: args.keep_last.unwrap_or(0),
        keep_hourly: args.keep_hourly.unwrap_or(0),
        keep_daily: args.keep_daily.unwrap_or(0),
        keep_weekly: args.keep_weekly.unwrap_or(0),
        keep_monthly: args.keep_monthly.unwrap_or(0),
        keep_yearly: args.keep_yearly.unwrap_or(0),
        keep_within,
        keep_tags: args.keep_tag.clone(),
        keep_incomplete: settings.retention.keep_incomplete,
    })
}

/// Prints a prune or forget report; exit 3 when objects could not be swept.
fn prune_done(
    settings: &settings::Settings,
    report: &commands::prune::PruneReport,
    json: bool,
) -> Result<(Exit, operation::Facts)> {
    if json {
        output::json(report)?;
    } else {
        output::prune_summary(report);
    }
    let exit = match &report.sweep_skipped {
        Some(why) => {
            eprintln!("kcbackup: {why}");
            Exit::Incomplete
        }
        None => Exit::Ok,
    };
    Ok((exit, operation::prune_facts(settings, report)))
}

/// The server `restore --to-database` loads into: the configured one, with
/// any `--mysql-*` flags laid over it.
fn restore_target(
    settings: &settings::Settings,
    args: &cli::RestoreArgs,
) -> Result<Option<settings::MysqlTarget>> {
    let mut target = settings.mysql.clone();
    if let Some(socket) = &args.mysql_socket {
        target.socket = Some(socket.clone());
        target.host = "localhost".into();
    }
    if let Some(host) = &args.mysql_host {
        target.host = host.clone();
    }
    if let Some(port) = args.mysql_port {
        target.port = port;
    }
    if let Some(user) = &args.mysql_user {
        target.user = user.clone();
    }
    if let Some(file) = &args.mysql_password_file {
        target.password = settings::read_password_file(file)?;
    }
    Ok(Some(target))
}
