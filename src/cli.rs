//! Command-line definitions (clap) only; validation happens in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{Overrides, SnapshotMethod};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: nothing new was published (database not answering, dump failed, lock held, ...)
  2  usage or configuration error (bad config, wrong credentials, unknown set id, s3, ...)
  3  a set was written but is incomplete, or verify/drill found a problem
  130/143  interrupted by SIGINT / SIGTERM (after cleanup)";

/// Consistent, verifiable backups of a Kopano Core server: database first,
/// then attachments and /etc/kopano, with a manifest proving completeness.
#[derive(Debug, Parser)]
#[command(name = "kcbackup", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Tool configuration file [default: $KCBACKUP_CONFIG, else /etc/kcbackup/kcbackup.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Backup repository (overrides [repository] path)
    #[arg(long, global = true, value_name = "DIR")]
    pub repository: Option<PathBuf>,

    /// Log errors only (KCBACKUP_LOG, if set, wins)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log more: -v info, -vv debug, -vvv trace (KCBACKUP_LOG, if set, wins)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up the database, then the attachment store and the Kopano config.
    Backup(BackupArgs),
    /// List the sets in the repository, with a total line.
    List(ListArgs),
    /// Re-read a set (dump, archives, every stored object), check every
    /// checksum, and prove again from the stored dump that no attachment is missing.
    Verify(VerifyArgs),
    /// Restore a set: the dump into a database, attachments and config into directories.
    Restore(RestoreArgs),
    /// Restore a set into a throwaway MariaDB and a scratch directory, check
    /// everything, report the recovery time, clean up.
    Drill(DrillArgs),
    /// Start a throwaway MariaDB with a generated Kopano store, back it up, clean up.
    Demo(DemoArgs),
    /// Write man pages or shell completions (used when packaging).
    #[command(hide = true, subcommand)]
    Generate(GenerateCommand),
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Write kcbackup.8 and kcbackup-<command>.8 into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The set: its id, or `latest` (the newest complete set).
    pub set: String,
    /// Load the dump into this database (on the configured server, or --mysql-*).
    #[arg(long, value_name = "NAME")]
    pub to_database: Option<String>,
    /// Restore the attachment tree into this directory.
    #[arg(long, value_name = "DIR")]
    pub to_attachments: Option<PathBuf>,
    /// Restore the Kopano config directory into this directory.
    #[arg(long, value_name = "DIR")]
    pub to_config: Option<PathBuf>,
    /// Replace a non-empty database; move files the set does not hold into a
    /// kcbackup-quarantine-<time> folder beside a non-empty directory.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_name = "PATH")]
    pub mysql_socket: Option<PathBuf>,
    #[arg(long, value_name = "HOST")]
    pub mysql_host: Option<String>,
    #[arg(long, value_name = "PORT")]
    pub mysql_port: Option<u16>,
    #[arg(long, value_name = "USER")]
    pub mysql_user: Option<String>,
    /// A file holding the password (never give it on the command line).
    #[arg(long, value_name = "FILE")]
    pub mysql_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The set: its id, or `latest` (the newest complete set).
    #[arg(default_value = "latest")]
    pub set: String,
    /// Leave the scratch directory (server stopped) behind and print where.
    #[arg(long)]
    pub keep: bool,
    /// Where to create the scratch directory [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show one set in detail: objects, deduplication, phases (`latest` works).
    #[arg(long, value_name = "SET")]
    pub long: Option<String>,
    /// One JSON document on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// One JSON document on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A label stored with the set (e.g. pre-upgrade).
    #[arg(long)]
    pub tag: Option<String>,
    /// How to freeze the attachment store: auto, none, btrfs, lvm.
    #[arg(long, value_enum)]
    pub snapshot: Option<SnapshotArg>,
    /// Read and hash every attachment, even those unchanged since the last set.
    #[arg(long)]
    pub rehash: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The set to check: its id, or `latest` (the newest complete set).
    #[arg(default_value = "latest")]
    pub set: String,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (server stopped) and print where it is.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SnapshotArg {
    Auto,
    None,
    Btrfs,
    Lvm,
}

impl From<SnapshotArg> for SnapshotMethod {
    fn from(a: SnapshotArg) -> Self {
        match a {
            SnapshotArg::Auto => SnapshotMethod::Auto,
            SnapshotArg::None => SnapshotMethod::None,
            SnapshotArg::Btrfs => SnapshotMethod::Btrfs,
            SnapshotArg::Lvm => SnapshotMethod::Lvm,
        }
    }
}

impl Cli {
    /// The log level `-q`/`-v` ask for (default: warnings).
    pub fn log_level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            _ => "trace",
        }
    }

    /// The settings overrides this command line carries.
    pub fn overrides(&self) -> Overrides {
        let snapshot = match &self.command {
            Command::Backup(b) => b.snapshot.map(Into::into),
            _ => None,
        };
        Overrides {
            config: self.config.clone(),
            snapshot,
            repository: self.repository.clone(),
            repository_only: matches!(
                self.command,
                Command::List(_) | Command::Verify(_) | Command::Restore(_) | Command::Drill(_)
            ),
        }
    }
}
