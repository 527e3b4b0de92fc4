//! Helpers shared by the benchmark examples: where the release binary is,
//! how big a tree is, a phase's time from a `--json` report, and restic
//! and borg as contenders (repositories, environment, backup commands).

#![allow(dead_code)] // each example uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// `target/release/kcbackup`, next to the running example.
pub fn kcbackup_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("kcbackup"))
        .context("where is the kcbackup binary?")?;
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release --bin kcbackup)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Bytes of regular files below `path` (symlinks not followed).
pub fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

/// Seconds of phase `name` in a backup report, NaN when absent.
pub fn phase(report: &Value, name: &str) -> f64 {
    report["phases"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["seconds"].as_f64())
        .unwrap_or(f64::NAN)
}

/// The benchmarks' store of about the requested size: 20 users, 1.5
/// attachments per message on average, the database's text spread over
/// the messages.
pub fn bench_spec(
    layout: kcbackup::layout::Layout,
    attachments: u64,
    attachment_kb: u64,
    db_mb: u64,
) -> kcbackup::generator::StoreSpec {
    let users = 20u32;
    let messages = (attachments as f64 / 1.5).ceil() as u64;
    kcbackup::generator::StoreSpec {
        layout,
        users,
        messages_per_user: (messages / u64::from(users)).max(1) as u32,
        max_attachments_per_message: 3,
        seed: 1,
        attachment_bytes: attachment_kb * 1024,
        lob_chunk: 384 * 1024,
        body_bytes: (db_mb << 20) as usize / messages.max(1) as usize,
        imap_copies: false,
        extras: 10,
        leftovers: true,
        database: "kopano".into(),
        config_attachment_storage: None,
        s3: None,
    }
}

/// One timed command: wall time and the peak RSS of its largest process.
pub struct Timed {
    pub seconds: f64,
    pub max_rss_kb: u64,
    pub stdout: String,
}

/// Runs `cmd` (its arguments and environment) under `/usr/bin/time -v`;
/// a non-zero exit is an error with its stderr.
pub fn timed_command(cmd: &Command) -> Result<Timed> {
    let report = tempfile::NamedTempFile::new()?;
    let program = cmd.get_program().to_owned();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-v")
        .arg("-o")
        .arg(report.path())
        .arg(&program)
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = wrapped
        .output()
        .context("running /usr/bin/time (install the `time` package)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{program:?} exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = fs::read_to_string(report.path())?;
    let max_rss_kb = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Timed {
        seconds,
        max_rss_kb,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The contenders of the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Kc,
    Restic,
    Borg,
}

pub const TOOLS: [Tool; 3] = [Tool::Kc, Tool::Restic, Tool::Borg];

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Kc => "kcbackup",
            Tool::Restic => "restic",
            Tool::Borg => "borg",
        }
    }
}

/// The contenders in the order of `round`: rotated by one each round, so
/// the page cache and the disk's writeback favour no one.
pub fn rotated(round: usize) -> Vec<Tool> {
    (0..TOOLS.len())
        .map(|i| TOOLS[(i + round) % TOOLS.len()])
        .collect()
}

/// restic and borg on the same data as kcbackup: their repositories in
/// `root`, the environment they need, and the dump to pipe into them.
pub struct Peers {
    pub root: PathBuf,
    pub restic_repo: PathBuf,
    pub borg_repo: PathBuf,
    /// `mariadb-dump --defaults-file=... FLAGS db`, for bash.
    pub dump_cmd: String,
    /// `mariadb --defaults-file=...`, for bash (add a database name).
    pub client_cmd: String,
    /// Sources of the tree backups: the attachment tree and /etc/kopano.
    pub tree: String,
    _defaults: kcbackup::mysql::ClientDefaults,
}

impl Peers {
    /// Writes restic's password file; the repositories are made by [`Peers::init`].
    pub fn new(root: &Path, store: &kcbackup::generator::GeneratedStore) -> Result<Peers> {
        let target = store.kopano_target();
        let defaults = kcbackup::mysql::ClientDefaults::write(&target)?;
        let defaults_arg = shell_quote(&defaults.arg().to_string_lossy());
        let dump_cmd = format!(
            "{} {defaults_arg} {} {}",
            sh(&kcbackup::mysql::dump_program(&target)?),
            kcbackup::dump::DUMP_FLAGS.join(" "),
            store.database
        );
        fs::write(root.join("restic.pass"), "bench\n")?;
        Ok(Peers {
            root: root.to_path_buf(),
            restic_repo: root.join("restic-repo"),
            borg_repo: root.join("borg-repo"),
            dump_cmd,
            client_cmd: format!("mariadb {defaults_arg}"),
            tree: format!("{} {}", sh(&store.attachment_path), sh(&store.config_dir)),
            _defaults: defaults,
        })
    }

    /// What restic and borg need in their environment.
    pub fn env<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("RESTIC_REPOSITORY", &self.restic_repo)
            .env("RESTIC_PASSWORD_FILE", self.root.join("restic.pass"))
            .env("RESTIC_CACHE_DIR", self.root.join("restic-cache"))
            .env("BORG_REPO", &self.borg_repo)
            .env("BORG_BASE_DIR", self.root.join("borg-base"))
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .stdin(std::process::Stdio::null())
    }

    /// Empty repositories of both (earlier ones removed): restic v2 with
    /// its default compression, borg unencrypted.
    pub fn init(&self) -> Result<()> {
        for dir in [&self.restic_repo, &self.borg_repo] {
            if dir.exists() {
                fs::remove_dir_all(dir)?;
            }
        }
        self.bash("restic init --quiet --repository-version 2 >/dev/null")?;
        self.bash("borg init --encryption none")?;
        Ok(())
    }

    /// A bash script with the tools' environment, `set -euo pipefail`.
    pub fn bash(&self, script: &str) -> Result<(f64, String)> {
        let mut c = Command::new("/bin/bash");
        self.env(&mut c)
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"));
        run(c).with_context(|| format!("while running {script:?}"))
    }

    /// The scripts of one backup of the dump and of the tree (`name`: the
    /// archive names for borg), with compression as in bench-nightly.
    pub fn backup_scripts(&self, tool: Tool, extra: &str, name: &str) -> [String; 2] {
        match tool {
            Tool::Kc => unreachable!("kcbackup runs on its own"),
            Tool::Restic => [
                format!(
                    "{} | restic backup --quiet --tag db {extra} --stdin --stdin-filename db.sql",
                    self.dump_cmd
                ),
                format!("restic backup --quiet --tag tree {extra} {}", self.tree),
            ],
            Tool::Borg => [
                format!(
                    "{} | borg create --compression zstd,3 --stdin-name db.sql ::db-{name} -",
                    self.dump_cmd
                ),
                format!(
                    "borg create --compression zstd,3 ::files-{name} {}",
                    self.tree
                ),
            ],
        }
    }
}

/// Runs to completion; wall seconds and stdout, or the exit and stderr.
pub fn run(mut c: Command) -> Result<(f64, String)> {
    let started = std::time::Instant::now();
    let out = c.output().context("while starting a command")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            c.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((seconds, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub fn sh(s: &Path) -> String {
    shell_quote(&s.display().to_string())
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The median of a few measurements (the mean of the middle two for an
/// even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}
