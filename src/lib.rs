//! kcbackup: consistent, verifiable backups of a Kopano Core server.
//!
//! The database is dumped first (one `--single-transaction` dump, streamed
//! through a hasher, a compressor and a scanner), then the attachment store
//! and `/etc/kopano` are captured; the manifest, written last, proves that
//! every attachment the dump references is present.
//!
//! Main types: [`settings::Settings`] (validated configuration),
//! [`dump::DumpReport`] (what the dump produced), [`repo::Repository`]
//! (sets, objects, lock), [`repo::manifest::Manifest`], the attachment
//! index ([`attachments::IndexEntry`]) and the proof ([`crossref::CrossRef`]).

pub mod attachments;
pub mod cli;
pub mod commands;
pub mod config_archive;
pub mod crossref;
pub mod dump;
pub mod error;
pub mod generator;
pub mod layout;
pub mod mysql;
pub mod output;
pub mod progress;
pub mod repo;
pub mod sandbox;
pub mod settings;
pub mod walk;

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
                rehash: args.rehash,
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
                repo::manifest::SetStatus::Incomplete => {
                    output::incomplete(&report);
                    Exit::Incomplete
                }
            })
        }
        Command::Verify(args) => {
            let settings = settings()?;
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
            Ok(if report.ok {
                Exit::Ok
            } else {
                Exit::Incomplete
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
        Command::Demo(_args) => {
            anyhow::bail!("demo is not built yet")
        }
    }
}
