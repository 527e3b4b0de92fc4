//! Measurement: backup time vs the recovery time a drill measures, by phase,
//! on a generated store sized by `--bytes` (`StoreSpec::sized`; the tree
//! comes out at about 45% of it, as files_v1 gzips part of it) in a throwaway
//! MariaDB. `--jobs 1,2,4` loads the dump once per value (restore into the
//! backup's server, then a drill each), to compare parallel table loads;
//! the default is one drill with kcbackup's default. Build both in release first: `cargo build --release --bin
//! kcbackup --example bench_drill`, then run `target/release/examples/bench_drill`.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kcbackup::generator::{self, StoreSpec};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use support::{du, kcbackup_binary};

struct Args {
    bytes: u64,
    layout: Layout,
    dir: PathBuf,
    /// `--jobs` values to run restore and drill with; empty: one drill, default.
    jobs: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        bytes: 4_500_000_000,
        layout: Layout::FilesV1 { l1: 10, l2: 20 },
        dir: std::env::temp_dir(),
        jobs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => a.bytes = value()?.parse()?,
            "--layout" => a.layout = Layout::parse(&value()?)?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--jobs" => a.jobs = value()?.split(',').map(str::to_string).collect(),
            other => bail!("unknown argument {other} (--bytes N, --layout L, --dir D, --jobs N,M)"),
        }
    }
    Ok(a)
}

/// Runs kcbackup with `--json`; returns the report and the wall time.
fn run(kc: &Path, args: &[&str], ok_codes: &[i32]) -> Result<(Value, f64)> {
    let started = Instant::now();
    let out = Command::new(kc).args(args).output()?;
    let seconds = started.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    if !ok_codes.contains(&code) {
        bail!(
            "kcbackup {args:?} exited {code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = serde_json::from_slice(&out.stdout).context("kcbackup printed no JSON")?;
    Ok((report, seconds))
}

fn gb(n: u64) -> String {
    format!("{:.2} GB", n as f64 / 1e9)
}

fn main() -> Result<()> {
    let a = args()?;
    let work = tempfile::Builder::new()
        .prefix("kcbench-drill-")
        .tempdir_in(&a.dir)?;
    let root = work.path();
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        ..SandboxOptions::default()
    })?;
    let spec = StoreSpec::sized(a.layout, "kopano", a.bytes);
    let clock = Instant::now();
    let store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    let db_bytes: u64 = sandbox
        .sql(
            "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'kopano'",
        )?
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "generated a {} store: {} referenced instances, attachments {}, database {} ({:.0}s)",
        a.layout,
        store.expected.referenced.len(),
        gb(du(&store.attachment_path)),
        gb(db_bytes),
        clock.elapsed().as_secs_f64()
    );

    let repo = root.join("repo");
    let config = store.write_tool_config(root, &repo)?;
    let kc = kcbackup_binary()?;
    let cfg = config.to_str().context("utf-8 path")?;

    let (backup, backup_s) = run(&kc, &["--config", cfg, "backup", "--json"], &[0])?;
    let phases: Vec<String> = backup["phases"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let name = p["name"].as_str().unwrap_or("?");
                    format!("{name} {:.1}s", p["seconds"].as_f64().unwrap_or(f64::NAN))
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "backup: {backup_s:.1}s wall ({}); repository {}",
        phases.join(", "),
        gb(du(&repo))
    );
    let pw = root.join("root.pw");
    fs::write(&pw, "\n")?;
    let socket = sandbox.socket().to_str().context("utf-8 path")?.to_string();
    for jobs in &a.jobs {
        let db = format!("restored_j{jobs}");
        let (restore, restore_s) = run(
            &kc,
            &[
                "--config",
                cfg,
                "restore",
                "latest",
                "--json",
                "--to-database",
                &db,
                "--jobs",
                jobs,
                "--mysql-socket",
                &socket,
                "--mysql-user",
                "root",
                "--mysql-password-file",
                pw.to_str().context("utf-8 path")?,
            ],
            &[0],
        )?;
        println!(
            "restore --jobs {jobs}: database load {:.1}s over {} connections (wall {restore_s:.1}s)",
            restore["database"]["seconds"].as_f64().unwrap_or(f64::NAN),
            restore["database"]["connections"],
        );
        sandbox.sql(&format!("DROP DATABASE `{db}`"))?;
    }
    // The backup's server is idle from here on; stop it so that it does not
    // compete with the drill's.
    drop(store);
    sandbox.stop()?;

    let jobs: Vec<Option<&String>> = if a.jobs.is_empty() {
        vec![None]
    } else {
        a.jobs.iter().map(Some).collect()
    };
    for jobs in jobs {
        let scratch = root.join(format!("scratch{}", jobs.map_or("", |j| j.as_str())));
        fs::create_dir(&scratch)?;
        let mut drill_args = vec!["--config", cfg, "drill", "--json", "--scratch"];
        drill_args.push(scratch.to_str().context("utf-8 path")?);
        if let Some(j) = jobs {
            drill_args.extend(["--jobs", j.as_str()]);
            println!("drill --jobs {j}:");
        }
        let (drill, drill_s) = run(&kc, &drill_args, &[0, 3])?;
        let d = &drill["durations"];
        let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "drill: {} — recovery time {:.1}s (wall {drill_s:.1}s): server start {:.1}s, \
         database load {:.1}s, attachment restore {:.1}s, config {:.2}s, checks {:.1}s, \
         cleanup {:.1}s",
            if drill["ok"] == true {
                "PASSED"
            } else {
                "FAILED"
            },
            f("total"),
            f("server_start"),
            f("database_load"),
            f("attachment_restore"),
            f("config_restore"),
            f("checks"),
            f("cleanup")
        );
        println!(
            "restored {} of SQL, {} files ({})",
            gb(drill["sql_bytes"].as_u64().unwrap_or(0)),
            drill["files"],
            gb(drill["attachment_bytes"].as_u64().unwrap_or(0))
        );
        println!("recovery time / backup time = {:.2}", f("total") / backup_s);
        for c in drill["checks"].as_array().into_iter().flatten() {
            if c["ok"] != true {
                println!("  FAILED {}: {}", c["name"], c["detail"]);
            }
        }
    }
    Ok(())
}
