//! kcbackup: consistent, verifiable backups of a Kopano Core server.
//!
//! The database is dumped first (one `--single-transaction` dump, streamed
//! through a hasher, a compressor and a scanner), then the attachment store
//! and `/etc/kopano` are captured; the manifest, written last, proves that
//! every attachment the dump references is present.
//!
//! Main types: [`settings::Settings`] (validated configuration),
//! [`dump::DumpReport`] (what the dump produced), [`repo::Repository`]
//! (sets, objects, lock) and [`repo::manifest::Manifest`].

pub mod cli;
pub mod commands;
pub mod dump;
pub mod error;
pub mod generator;
pub mod layout;
pub mod mysql;
pub mod output;
pub mod progress;
pub mod repo;
pub mod restore;
pub mod sandbox;
pub mod settings;
pub mod signals;
pub mod snapshot;

use std::io::IsTerminal;

use anyhow::Result;

use cli::{Cli, Command};
use error::Exit;

/// Runs one command line; the exit code follows the report.
pub fn run(cli: Cli) -> Result<Exit> {
    let settings = || settings::Settings::load(&cli.overrides());
    match &cli.command {
        Command::Backup(args) => {
            let settings = settings()?;
            let progress = progress::for_terminal();
            let opts = commands::backup::BackupOptions {
                tag: args.tag.clone(),
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
            Ok(match report.status {
                repo::manifest::SetStatus::Complete => Exit::Ok,
                repo::manifest::SetStatus::Incomplete => Exit::Incomplete,
            })
        }
        Command::List(args) => {
            let lines = commands::list::run(&settings()?)?;
            if args.json {
                output::json(&lines)?;
            } else {
                output::list(&lines);
            }
            Ok(Exit::Ok)
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
            Ok(match report.backup.status {
                repo::manifest::SetStatus::Complete => Exit::Ok,
                repo::manifest::SetStatus::Incomplete => Exit::Incomplete,
            })
        }
    }
}
