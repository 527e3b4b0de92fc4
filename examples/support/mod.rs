//! Helpers shared by the benchmark examples: where the release binary is,
//! how big a tree is, and a phase's time from a `--json` report.

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
