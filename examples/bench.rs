//! Benchmark: kcbackup against the manual procedure, on a generated store in
//! a throwaway MariaDB. Run through `scripts/bench` (see its header).
//!
//! Prints, in one run: (a) full backup vs `mysqldump | gzip; cp -r; cp -r`,
//! (b) the attachment phase after 1% new attachments vs the full one,
//! (c) `kcbackup verify` vs `sha256sum -c` over the same files, (d) peak RSS,
//! (e) the cost of rolling verification in a nightly backup.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kcbackup::generator;
use kcbackup::layout::Layout;
use kcbackup::mysql::{ClientDefaults, dump_program};
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use support::{Timed, du, kcbackup_binary, phase, timed_command};

struct Args {
    attachments: u64,
    attachment_kb: u64,
    db_mb: u64,
    layout: Layout,
    dir: PathBuf,
    keep: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        attachments: 20_000,
        attachment_kb: 220,
        db_mb: 200,
        layout: Layout::FilesV1 { l1: 10, l2: 20 },
        dir: std::env::temp_dir(),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--attachments" => a.attachments = value()?.parse()?,
            "--attachment-kb" => a.attachment_kb = value()?.parse()?,
            "--db-mb" => a.db_mb = value()?.parse()?,
            "--layout" => a.layout = Layout::parse(&value()?)?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--keep" => a.keep = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// One timed command (program and arguments).
fn timed(cmd: &[&str]) -> Result<Timed> {
    let (program, args) = cmd.split_first().context("an empty command")?;
    let mut command = Command::new(program);
    command.args(args);
    timed_command(&command)
}

fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

fn main() -> Result<()> {
    let a = args()?;
    let work = tempfile::Builder::new()
        .prefix("kcbench-")
        .tempdir_in(&a.dir)?;
    let root = work.path().to_path_buf();
    println!("work directory: {}", root.display());

    let spec = support::bench_spec(a.layout, a.attachments, a.attachment_kb, a.db_mb);
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        keep: false,
        ..SandboxOptions::default()
    })?;
    let clock = Instant::now();
    let mut store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    println!(
        "generated {} attachments ({}) and a database in {:.0}s",
        store.expected.referenced.len(),
        gib(du(&store.attachment_path)),
        clock.elapsed().as_secs_f64()
    );

    let repo = root.join("repo");
    let config = store.write_tool_config(&root, &repo)?;
    let kc = kcbackup_binary()?;
    let kc = kc.to_str().context("utf-8 path")?;
    let cfg = config.to_str().context("utf-8 path")?;

    // Warm the page cache the same way for both contenders.
    timed(&[
        "tar",
        "-cf",
        "/dev/null",
        "-C",
        root.to_str().unwrap_or("/"),
        "store",
    ])?;

    // (a) The manual procedure, made durable with one sync at the end like kcbackup.
    let manual = root.join("manual");
    fs::create_dir_all(&manual)?;
    let defaults = ClientDefaults::write(&store.kopano_target())?;
    let dump = dump_program(&store.kopano_target())?;
    let script = format!(
        "set -e -o pipefail; {dump} {defaults} --single-transaction --routines {db} | gzip > {m}/db.sql.gz; \
         cp -r {att} {m}/attachments; cp -r {etc} {m}/etc; sync -f {m}",
        dump = dump.display(),
        defaults = defaults.arg().to_string_lossy(),
        db = store.database,
        m = manual.display(),
        att = store.attachment_path.display(),
        etc = store.config_dir.display(),
    );
    let manual_run = timed(&["bash", "-c", &script])?;
    let manual_bytes = du(&manual);

    let full = timed(&[kc, "--config", cfg, "backup", "--json"])?;
    let full_json: Value = serde_json::from_str(&full.stdout)?;
    let full_bytes = du(&repo);

    // (b) 1% new attachments, then the second backup.
    let new = (store.expected.referenced.len() as u32 / 100).max(1);
    generator::add_attachments(&sandbox, &mut store, new, 2)?;
    let objects_before = du(&repo.join("objects"));
    let second = timed(&[kc, "--config", cfg, "backup", "--json"])?;
    let second_json: Value = serde_json::from_str(&second.stdout)?;
    let second_written = du(&repo.join("objects")) - objects_before;

    // (c) verify vs sha256sum -c over the same data (the copied tree and dump).
    let list = root.join("sha256.list");
    let listing = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "cd {m} && find . -type f -print0 | xargs -0 sha256sum > {l}",
            m = manual.display(),
            l = list.display()
        ))
        .status()?;
    if !listing.success() {
        bail!("could not list checksums of the manual copy");
    }
    let sums = format!(
        "cd {} && sha256sum -c --quiet {}",
        manual.display(),
        list.display()
    );
    let sha_run = timed(&["bash", "-c", &sums])?;
    let verify = timed(&[kc, "--config", cfg, "verify", "--json"])?;
    let verify_json: Value = serde_json::from_str(&verify.stdout)?;
    if verify_json["ok"] != true {
        bail!("verify found problems: {}", verify.stdout);
    }

    // (e) Rolling verification: the nightly backup above re-read its slice
    // (rolling_days 30); one more backup with practically no slice
    // (rolling_days 10^9) shows the same backup without it.
    let mut toml = fs::read_to_string(&config)?;
    toml.push_str("\n[verify]\nrolling_days = 1000000000\n");
    fs::write(&config, toml)?;
    let third = timed(&[kc, "--config", cfg, "backup", "--json"])?;
    let third_json: Value = serde_json::from_str(&third.stdout)?;
    let rolling = &second_json["attachments"]["rolling"];

    let full_att = phase(&full_json, "attachments");
    let second_att = phase(&second_json, "attachments");
    let full_written = full_json["attachments"]["capture"]["written_bytes"]
        .as_u64()
        .unwrap_or(0);
    println!();
    println!(
        "store: {} attachments, layout {}, attachments {}, SQL dump {}",
        store.expected.referenced.len(),
        a.layout,
        gib(du(&store.attachment_path)),
        gib(full_json["db"]["bytes"].as_u64().unwrap_or(0)),
    );
    println!();
    println!(
        "{:<44} {:>9} {:>11} {:>9}",
        "", "time", "written", "max RSS"
    );
    let row = |name: &str, s: f64, bytes: u64, rss: Option<u64>| {
        println!(
            "{name:<44} {s:>8.2}s {:>11} {:>9}",
            gib(bytes),
            rss.map(mib).unwrap_or_default()
        )
    };
    row(
        "(a) manual: dump | gzip; cp -r; cp -r; sync",
        manual_run.seconds,
        manual_bytes,
        Some(manual_run.max_rss_kb),
    );
    row(
        "    kcbackup backup (full)",
        full.seconds,
        full_bytes,
        Some(full.max_rss_kb),
    );
    println!(
        "    ratio {:.2} (goal <= 1.0)",
        full.seconds / manual_run.seconds
    );
    row(
        "(b) attachment phase, full backup",
        full_att,
        full_written,
        None,
    );
    row(
        &format!("    attachment phase after {new} new (1%)"),
        second_att,
        second_written,
        Some(second.max_rss_kb),
    );
    println!(
        "    ratio time {:.3}, bytes {:.3} (goal <= 0.1)",
        second_att / full_att,
        second_written as f64 / full_written.max(1) as f64
    );
    row(
        "(c) sha256sum -c (manual copy)",
        sha_run.seconds,
        0,
        Some(sha_run.max_rss_kb),
    );
    row(
        "    kcbackup verify",
        verify.seconds,
        0,
        Some(verify.max_rss_kb),
    );
    println!(
        "    ratio {:.2} (goal <= 0.5)",
        verify.seconds / sha_run.seconds
    );
    println!(
        "    verify read {} files, {}",
        verify_json["checked_files"],
        gib(verify_json["checked_bytes"].as_u64().unwrap_or(0))
    );
    println!("(d) peak memory is the max RSS column (largest process of each run)");
    row(
        "(e) nightly backup, rolling_days 30",
        second.seconds,
        0,
        Some(second.max_rss_kb),
    );
    println!(
        "    rolling verification re-read {} objects, {} in {:.2}s ({:.0}% of that backup)",
        rolling["objects"],
        gib(rolling["bytes"].as_u64().unwrap_or(0)),
        phase(&second_json, "rolling verification"),
        100.0 * phase(&second_json, "rolling verification") / second.seconds
    );
    row(
        "    nightly backup, rolling_days 10^9",
        third.seconds,
        0,
        Some(third.max_rss_kb),
    );
    println!(
        "    (re-read {} objects in {:.2}s)",
        third_json["attachments"]["rolling"]["objects"],
        phase(&third_json, "rolling verification")
    );

    if a.keep {
        let kept = work.keep();
        println!("kept {} (database server stopped)", kept.display());
    }
    sandbox.stop()?;
    Ok(())
}
