//! Helpers shared by the benchmark examples: where the release binary is,
//! how big a tree is, and a phase's time from a `--json` report.

#![allow(dead_code)] // each example uses its own subset

use std::fs;
use std::path::{Path, PathBuf};

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
