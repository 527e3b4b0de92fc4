//! Command-line definitions (clap) only; validation happens in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{Overrides, SnapshotMethod};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: nothing new was published (database not answering, dump failed, lock held, ...)
  2  usage or configuration error (bad config, wrong credentials, unknown set id, s3, ...)
  3  a set was written but is incomplete, verify/drill found a problem, or
     restore found the set's stored data damaged or missing
  130/143  interrupted by SIGINT / SIGTERM (after cleanup)";

/// Consistent, verifiable backups of a Kopano Core server: database first,
/// then attachments and /etc/kopano, with a manifest proving completeness.
#[derive(Debug, Parser)]
#[command(name = "kcbackup", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Tool configuration file [default: $KCBACKUP_CONFIG, else /etc/kcbackup/kcbackup.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Backup repository: a [repositories.NAME] name, a directory, or an
    /// s3://bucket/prefix URL (overrides [repository])
    #[arg(long, global = true, value_name = "NAME|DIR|URL")]
    pub repository: Option<String>,

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
    /// Remove sets the retention policy does not keep, then delete the
    /// objects no remaining set references.
    #[command(long_about = PRUNE_ABOUT)]
    Prune(PruneArgs),
    /// Remove the named sets, then delete the objects no remaining set references.
    #[command(long_about = FORGET_ABOUT)]
    Forget(ForgetArgs),
    /// Copy sets into another repository (local or S3): only the objects it
    /// lacks are sent, each checked on the way; a set appears there only
    /// once all of it is stored; a killed copy resumes where it stopped.
    Copy(CopyArgs),
    /// Remove the repository lock of a run that is gone (on object storage
    /// its lock object stays behind); refuses a lock that is still fresh.
    Unlock(UnlockArgs),
    /// Start a throwaway MariaDB with a generated Kopano store, back it up, clean up.
    Demo(DemoArgs),
    /// The manual's upgrade procedure: `prepare` before, `finish` after.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
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

const PRUNE_ABOUT: &str = "\
Remove the sets the retention policy does not keep, then delete the objects \
no remaining set references (restic's forget + prune in one run).

The rules (from the command line; when it names none, from [retention] in \
the config, default: 7 daily, 4 weekly, 6 monthly, tag pre-upgrade), as \
restic's forget has them:
  - a set kept by any rule is kept (the union of the rules);
  - --keep-last N keeps the N newest complete sets;
  - --keep-hourly/daily/weekly/monthly/yearly N: in each of the N newest \
calendar hours, days, ISO weeks, months, years that hold a complete set, \
the NEWEST set of it is kept; when fewer than N such buckets exist the \
oldest complete set is kept too. Buckets are in the host's local time \
zone (DST included); --utc counts them in UTC;
  - --keep-within DURATION (y, m, w, d, h: 14d, 1y6m) keeps the complete \
sets at most DURATION older than the newest complete set (not than now);
  - --keep-tag TAG keeps complete sets with that tag.
Incomplete sets count for no rule and fill no bucket; one is removed once \
keep_incomplete (default 3) newer complete sets exist. Damaged sets (an \
unreadable manifest) are kept: only forget removes them, and while one \
exists no object is deleted (exit 3). The newest complete set is never \
removed. A prune with no rule at all is refused (exit 2).

Crash safe: sets are first renamed to a hidden trash name, then the live \
objects are computed from every remaining set and only the others deleted, \
then the trash. A prune killed at any point leaves every remaining set \
verifiable; the next prune finishes the job. Objects in objects/.corrupt/ \
are kept for inspection; drill reports of removed sets are deleted.";

const FORGET_ABOUT: &str = "\
Remove the named sets (ids, or `latest`), then delete the objects no \
remaining set references, crash safe like prune. Forgetting the newest \
complete set needs --force. Damaged and incomplete sets can be forgotten.";

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the N newest complete sets.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest set of each of the last N hours with a complete set.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest set of each of the last N days with a complete set.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest set of each of the last N ISO weeks with a complete set.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest set of each of the last N months with a complete set.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest set of each of the last N years with a complete set.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep complete sets at most this much older than the newest (14d, 1y6m, 36h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep complete sets with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Count calendar buckets in UTC instead of the host's local time.
    #[arg(long)]
    pub utc: bool,
    /// Show each set with keep or remove and the rules, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonArg,
}

impl PruneArgs {
    /// Whether the command line names any rule (then `[retention]` is ignored).
    pub fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || !self.keep_tag.is_empty()
    }
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The sets to remove: ids, or `latest`.
    #[arg(required = true, value_name = "SET")]
    pub sets: Vec<String>,
    /// Allow forgetting the newest complete set.
    #[arg(long)]
    pub force: bool,
    /// Show what would be removed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The set: its id, or `latest` (the newest complete set).
    #[arg(
        required_unless_present = "all",
        conflicts_with = "all",
        value_name = "SET"
    )]
    pub set: Option<String>,
    /// Every set of the repository (those the target has are skipped).
    #[arg(long)]
    pub all: bool,
    /// The target: a [repositories.NAME] name, a directory or an s3:// URL
    /// [default: [copy] to].
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Without --to and [copy] to, do nothing and exit 0 (the systemd units).
    #[arg(long)]
    pub if_configured: bool,
    /// Then prune the target with its own policy ([repositories.NAME.retention],
    /// else [retention]), when every set was copied.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub lock: LockWaitArg,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct LockWaitArg {
    /// Wait up to this many seconds for another run holding the repository
    /// lock, instead of failing at once (naming it).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub lock_wait: u64,
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
    /// For a set of an s3 attachment store: PUT its objects back under their
    /// keys into this bucket (on the set's endpoint, or --s3-endpoint), with
    /// the credentials backup uses. --to-attachments writes them as files
    /// named by key instead, for inspection.
    #[arg(long, value_name = "NAME")]
    pub to_bucket: Option<String>,
    /// The S3 server for --to-bucket, as a URL (`https://host:port`)
    /// [default: the set's endpoint].
    #[arg(long, value_name = "URL", requires = "to_bucket")]
    pub s3_endpoint: Option<String>,
    /// Replace a non-empty database; move files the set does not hold into a
    /// kcbackup-quarantine-<time> folder beside a non-empty directory, and
    /// objects it does not hold under a kcbackup-quarantine-<time>/ prefix.
    #[arg(long)]
    pub force: bool,
    /// Connections loading the dump's tables at once [default: one per
    /// core, at most 4]; 1 loads it as one stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
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
    /// Connections loading the dump's tables at once [default: half the
    /// cores, at least 1, at most 4: the attachment restore runs beside
    /// the load]; 1 loads it as one stream.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
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

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Stop the MTA and the Kopano services ([upgrade] in the config), take a
    /// verified `pre-upgrade` backup of the quiescent database, record a census
    /// of users, groups and stores, and print the rollback command. The
    /// services stay stopped for the upgrade; on any failure they are started
    /// again and the exit code is non-zero.
    Prepare(UpgradePrepareArgs),
    /// Start the Kopano services, then the MTA, and compare the census with
    /// the pre-upgrade one (exit 0 equal, 3 a count differs, 1 a service
    /// failed to start).
    Finish(UpgradeFinishArgs),
    /// After a failed upgrade: stop the services, restore the newest (or
    /// the named) pre-upgrade set into production (database, attachments with
    /// stale files quarantined, /etc/kopano with the current one kept beside
    /// it), start the services as `finish` does. Packages are not touched.
    Rollback(UpgradeRollbackArgs),
}

#[derive(Debug, Args)]
pub struct UpgradeRollbackArgs {
    /// The set: its id [default: the newest complete pre-upgrade set].
    pub set: Option<String>,
    /// Really replace the live database, attachments and config.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct UpgradePrepareArgs {
    /// Stop nothing: a hot backup, marked so in the manifest.
    #[arg(long)]
    pub keep_running: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Args)]
pub struct UpgradeFinishArgs {
    #[command(flatten)]
    pub output: JsonArg,
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
    pub lock: LockWaitArg,
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
                Command::List(_)
                    | Command::Verify(_)
                    | Command::Restore(_)
                    | Command::Drill(_)
                    | Command::Prune(_)
                    | Command::Forget(_)
                    | Command::Copy(_)
                    | Command::Unlock(_)
            ),
        }
    }
}
