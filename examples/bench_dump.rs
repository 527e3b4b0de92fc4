//! Benchmark of the dump phase (a script that prints figures, not a test):
//! generates a Kopano store whose dump is about SIZE_MB, then measures
//! `mariadb-dump ... > /dev/null` against `kcbackup backup` (dump phase
//! MB/s, and kcbackup's peak RSS, polled from /proc VmHWM).
//!
//! Usage: cargo run --release --example bench_dump -- [SIZE_MB, default 1024]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kcbackup::generator::{self, StoreSpec};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<()> {
    let size_mb: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let dir = tempfile::Builder::new().prefix("kcbench-").tempdir()?;
    let sandbox = Sandbox::start(&SandboxOptions::default())?;
    // Attachment data goes into `lob` as hex, so the dump is about twice the data.
    let spec = StoreSpec::sized(Layout::Database, "kopano", size_mb * 1_000_000 / 2);
    let t = Instant::now();
    let store = generator::generate(&sandbox, &dir.path().join("store"), &spec)?;
    println!("generated store in {:.1}s", t.elapsed().as_secs_f64());

    // Baseline: the bare dump command, same flags, output thrown away.
    let defaults = kcbackup::mysql::ClientDefaults::write(&store.kopano_target())?;
    let t = Instant::now();
    let status = Command::new("mariadb-dump")
        .arg(defaults.arg())
        .args(kcbackup::dump::DUMP_FLAGS)
        .arg(&store.database)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "mariadb-dump failed");
    let bare = t.elapsed().as_secs_f64();

    let repo = dir.path().join("repo");
    let config = store.write_tool_config(dir.path(), &repo)?;
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kcbackup");
    // The first backup stores every chunk; the second (nothing changed but
    // the dump's trailer) finds nearly all of them stored: a quiet night.
    for run in ["first backup", "second backup"] {
        let (report, peak) = backup(&exe, &config)?;
        let bytes = report["db"]["bytes"].as_f64().unwrap_or(0.0);
        let dump_s = report["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "dump"))
            .and_then(|p| p["seconds"].as_f64())
            .unwrap_or(f64::NAN);
        println!("{run}:");
        println!(
            "  dump size: {:.0} MB SQL, {:.0} MB stored, {:.1} MB new ({} chunks, {} new)",
            bytes / 1e6,
            report["db"]["stored_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            report["db"]["new_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            report["db"]["chunks"],
            report["db"]["new_chunks"],
        );
        println!(
            "  mariadb-dump > /dev/null: {bare:.2}s, {:.0} MB/s",
            bytes / 1e6 / bare
        );
        println!(
            "  kcbackup dump phase:      {dump_s:.2}s, {:.0} MB/s (hash + chunk + zstd + scan)",
            bytes / 1e6 / dump_s
        );
        println!("  kcbackup peak RSS:        {} MiB", peak / 1024);
    }
    Ok(())
}

/// One `kcbackup backup --json`: its report and peak RSS in KiB.
fn backup(exe: &Path, config: &Path) -> Result<(serde_json::Value, u64)> {
    let mut child = Command::new(exe)
        .args([
            "--config",
            config.to_str().context("path")?,
            "backup",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "while starting {} (cargo build --release first)",
                exe.display()
            )
        })?;
    let mut peak = 0;
    while child.try_wait()?.is_none() {
        peak = peak.max(vm_hwm_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "kcbackup backup failed");
    Ok((serde_json::from_slice(&out.stdout)?, peak))
}
