//! Benchmark: kcbackup against restic, borg and the manual procedure, on a
//! generated store in a throwaway MariaDB. Run through `scripts/bench` (see
//! its header).
//!
//! Prints, in one run: the floors (bare dump, `cat` of the tree, `dd`
//! write with fsync), full backup, nightly backup after 1% new, verify
//! (`restic check --read-data`, `borg check --verify-data`), restore
//! (`restic restore` plus loading its dump) and drill, each contender twice
//! in rotated order, medians; the ratios against the goals of issue 13;
//! then (a) full backup vs `mysqldump | gzip; cp -r; cp -r`, (b) the
//! attachment phase after 1% new vs the full one, (c) `kcbackup verify` vs
//! `sha256sum -c`, (d) peak RSS, (e) the cost of rolling verification.
//! `--many-files N` instead measures one backup's peak RSS on a tree of N
//! small files.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kcbackup::generator;
use kcbackup::layout::Layout;

use kcbackup::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use support::{Peers, Timed, Tool, du, kcbackup_binary, median, phase, rotated, sh, timed_command};

struct Args {
    attachments: u64,
    attachment_kb: u64,
    db_mb: u64,
    layout: Layout,
    dir: PathBuf,
    keep: bool,
    /// Only the peak-RSS row, on a tree of this many small files.
    many_files: Option<u64>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        attachments: 20_000,
        attachment_kb: 220,
        db_mb: 200,
        layout: Layout::FilesV1 { l1: 10, l2: 20 },
        dir: std::env::temp_dir(),
        keep: false,
        many_files: None,
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
            "--many-files" => a.many_files = Some(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// One timed command (program and arguments).
fn timed(cmd: &[&str]) -> Result<Timed> {
    timed_in(cmd, None)
}

/// [`timed`], with restic's and borg's environment when `peers` is given.
fn timed_in(cmd: &[&str], peers: Option<&Peers>) -> Result<Timed> {
    let (program, args) = cmd.split_first().context("an empty command")?;
    let mut command = Command::new(program);
    command.args(args);
    if let Some(peers) = peers {
        peers.env(&mut command);
    }
    timed_command(&command)
}

fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// Two measurements of each contender for each row, and their medians.
#[derive(Default)]
struct Row {
    kc: Vec<f64>,
    restic: Vec<f64>,
    borg: Vec<f64>,
    /// kcbackup's peak RSS in KiB, the largest of its runs.
    kc_rss_kb: u64,
}

impl Row {
    fn push(&mut self, tool: Tool, seconds: f64) {
        match tool {
            Tool::Kc => self.kc.push(seconds),
            Tool::Restic => self.restic.push(seconds),
            Tool::Borg => self.borg.push(seconds),
        }
    }
    fn get(&self, tool: Tool) -> f64 {
        median(match tool {
            Tool::Kc => &self.kc,
            Tool::Restic => &self.restic,
            Tool::Borg => &self.borg,
        })
    }
    fn print(&self, name: &str) {
        let cell = |v: &[f64]| match v {
            [] => format!("{:>17}", "-"),
            v => format!(
                "{:>7.2}s ({})",
                median(v),
                v.iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        };
        println!(
            "{name:<34} {:>22} {:>22} {:>22}",
            cell(&self.kc),
            cell(&self.restic),
            cell(&self.borg)
        );
    }
}

/// Runs `script` twice in bash and gives the median.
fn twice(script: &str) -> Result<f64> {
    let mut runs = Vec::new();
    for _ in 0..2 {
        runs.push(timed(&["bash", "-c", &format!("set -e -o pipefail; {script}")])?.seconds);
    }
    Ok(median(&runs))
}

fn goal(name: &str, ratio: f64, limit: f64) {
    println!(
        "  {name:<62} {ratio:>6.2} (goal <= {limit}) {}",
        if ratio <= limit { "MET" } else { "not met" }
    );
}

/// `--many-files N`: one full backup of a tree of N files of 1-8 KiB
/// (a database of the small store, so the dump is negligible), its peak RSS.
fn many_files(a: &Args, root: &std::path::Path, kc: &str) -> Result<()> {
    let n = a.many_files.unwrap_or(0);
    let mut spec = support::bench_spec(a.layout, 300, 20, 2);
    spec.extras = 0;
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        ..SandboxOptions::default()
    })?;
    let store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    let clock = Instant::now();
    let extra = store.attachment_path.join("many");
    for i in 0..n {
        let dir = extra.join(format!("{}", i % 1000));
        if i < 1000 {
            fs::create_dir_all(&dir)?;
        }
        let size = 1024 + (i * 7919) % 7168;
        let body: Vec<u8> = (0..size).map(|j| ((i + j) % 251) as u8).collect();
        fs::write(dir.join(format!("{i}")), body)?;
    }
    println!(
        "wrote {n} small files ({}) in {:.0}s",
        gib(du(&extra)),
        clock.elapsed().as_secs_f64()
    );
    let repo = root.join("repo");
    let config = store.write_tool_config(root, &repo)?;
    let cfg = config.to_str().context("utf-8 path")?;
    for (what, args) in [
        ("full backup", ["--config", cfg, "backup", "--json"]),
        (
            "nightly backup (nothing new)",
            ["--config", cfg, "backup", "--json"],
        ),
    ] {
        let run = timed(&[kc, args[0], args[1], args[2], args[3]])?;
        println!(
            "{what} of {n} files: {:.1}s, peak RSS {} (goal <= 64 MiB: {})",
            run.seconds,
            mib(run.max_rss_kb),
            if run.max_rss_kb <= 64 * 1024 {
                "MET"
            } else {
                "not met"
            }
        );
    }
    drop(store);
    sandbox.stop()?;
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    let work = tempfile::Builder::new()
        .prefix("kcbench-")
        .tempdir_in(&a.dir)?;
    let root = work.path().canonicalize()?;
    println!("work directory: {}", root.display());
    let kc = kcbackup_binary()?;
    let kc = kc.to_str().context("utf-8 path")?;
    if a.many_files.is_some() {
        return many_files(&a, &root, kc);
    }

    let spec = support::bench_spec(a.layout, a.attachments, a.attachment_kb, a.db_mb);
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        keep: false,
        ..SandboxOptions::default()
    })?;
    let clock = Instant::now();
    let mut store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    println!(
        "generated {} attachments ({}, {} files) and a database in {:.0}s",
        store.expected.referenced.len(),
        gib(du(&store.attachment_path)),
        store.expected.data_files.len(),
        clock.elapsed().as_secs_f64()
    );

    let repo = root.join("repo");
    let config = store.write_tool_config(&root, &repo)?;
    let cfg = config.to_str().context("utf-8 path")?;
    let peers = Peers::new(&root, &store)?;
    let peer = |script: &str| -> Result<Timed> {
        timed_in(
            &["bash", "-c", &format!("set -e -o pipefail; {script}")],
            Some(&peers),
        )
    };
    let kc_json = |args: &[&str]| -> Result<(Timed, Value)> {
        let mut cmd = vec![kc, "--config", cfg];
        cmd.extend_from_slice(args);
        let run = timed(&cmd)?;
        let json = serde_json::from_str(&run.stdout)
            .with_context(|| format!("kcbackup {args:?} printed no JSON"))?;
        Ok((run, json))
    };

    // Warm the page cache the same way for every contender.
    timed(&[
        "tar",
        "-cf",
        "/dev/null",
        "-C",
        root.to_str().unwrap_or("/"),
        "store",
    ])?;

    // Floors: what the database, the disk's reads and its writes allow.
    let floor_dump = twice(&format!("{} > /dev/null", peers.dump_cmd))?;
    let floor_read = twice(&format!(
        "find {} -type f -print0 | xargs -0 cat > /dev/null",
        sh(&store.attachment_path)
    ))?;

    // Full backups: two rounds, fresh repositories, the order rotated.
    let mut full = Row::default();
    let mut full_json = Value::Null;
    let mut round = 0;
    for _ in 0..2 {
        if repo.exists() {
            fs::remove_dir_all(&repo)?;
        }
        peers.init()?;
        for tool in rotated(round) {
            let seconds = match tool {
                Tool::Kc => {
                    let (run, json) = kc_json(&["backup", "--json"])?;
                    full.kc_rss_kb = full.kc_rss_kb.max(run.max_rss_kb);
                    full_json = json;
                    run.seconds
                }
                _ => {
                    let [dump, tree] = peers.backup_scripts(tool, "", "full");
                    peer(&dump)?.seconds + peer(&tree)?.seconds
                }
            };
            full.push(tool, seconds);
        }
        round += 1;
    }
    // The same full backup with `[backup] overlap = false` (the capture
    // after the dump), into a repository of its own, twice.
    let serial_repo = root.join("repo-serial");
    let serial_config = root.join("serial.toml");
    fs::write(
        &serial_config,
        format!(
            "{}\n[backup]\noverlap = false\n",
            store.tool_config(&serial_repo, "none")
        ),
    )?;
    let mut serial = Vec::new();
    let mut serial_json = Value::Null;
    for _ in 0..2 {
        if serial_repo.exists() {
            fs::remove_dir_all(&serial_repo)?;
        }
        let serial_cfg = serial_config.to_str().context("utf-8 path")?;
        let run = timed(&[kc, "--config", serial_cfg, "backup", "--json"])?;
        serial_json = serde_json::from_str(&run.stdout)?;
        serial.push(run.seconds);
    }
    fs::remove_dir_all(&serial_repo)?;
    let stored = du(&repo);
    let mib_stored = (stored >> 20).max(1);
    let dd = root.join("dd.out");
    let floor_write = twice(&format!(
        "dd if=/dev/zero of={} bs=1M count={mib_stored} conv=fsync status=none; rm -f {}",
        sh(&dd),
        sh(&dd)
    ))?;

    // Nightly: 1% new attachments, then each backs up; twice.
    let new = (store.expected.referenced.len() as u32 / 100).max(1);
    let mut nightly = Row::default();
    let mut second_json = Value::Null;
    let mut second_written = 0;
    for night in 0..2 {
        generator::add_attachments(&sandbox, &mut store, new, 2 + night as u64)?;
        for tool in rotated(round) {
            let seconds = match tool {
                Tool::Kc => {
                    let before = du(&repo.join("objects"));
                    let (run, json) = kc_json(&["backup", "--json"])?;
                    nightly.kc_rss_kb = nightly.kc_rss_kb.max(run.max_rss_kb);
                    if night == 0 {
                        second_json = json;
                        second_written = du(&repo.join("objects")) - before;
                    }
                    run.seconds
                }
                _ => {
                    let [dump, tree] = peers.backup_scripts(tool, "", &format!("night{night}"));
                    peer(&dump)?.seconds + peer(&tree)?.seconds
                }
            };
            nightly.push(tool, seconds);
        }
        round += 1;
    }

    // Verify: every stored byte read back and checked.
    let mut verify = Row::default();
    let mut verify_json = Value::Null;
    for _ in 0..2 {
        for tool in rotated(round) {
            let seconds = match tool {
                Tool::Kc => {
                    let (run, json) = kc_json(&["verify", "--json"])?;
                    if json["ok"] != true {
                        bail!("verify found problems: {}", run.stdout);
                    }
                    verify.kc_rss_kb = verify.kc_rss_kb.max(run.max_rss_kb);
                    verify_json = json;
                    run.seconds
                }
                Tool::Restic => peer("restic check --quiet --read-data")?.seconds,
                Tool::Borg => peer("borg check --verify-data")?.seconds,
            };
            verify.push(tool, seconds);
        }
        round += 1;
    }

    // Restore: the dump into a fresh database and the tree into an empty
    // directory (restic: `restic restore` of the tree, then its dump piped
    // into the client). borg's extract is not a goal and not run.
    let mut restore = Row::default();
    let mut restore_json = Value::Null;
    // The restores load as the store's own user, into databases of their own.
    sandbox.sql(&format!(
        "GRANT ALL PRIVILEGES ON `bench\\_%`.* TO '{}'@'localhost';",
        store.db_user
    ))?;
    for r in 0..2 {
        for tool in rotated(round) {
            let dir = root.join(format!("restore-{}-{r}", tool.name()));
            let db = format!("bench_{}_{r}", tool.name());
            let seconds = match tool {
                Tool::Kc => {
                    let dir = dir.to_str().context("utf-8 path")?;
                    let (run, json) = kc_json(&[
                        "restore",
                        "latest",
                        "--to-database",
                        &db,
                        "--to-attachments",
                        dir,
                        "--json",
                    ])?;
                    restore.kc_rss_kb = restore.kc_rss_kb.max(run.max_rss_kb);
                    restore_json = json;
                    run.seconds
                }
                Tool::Restic => {
                    let client = &peers.client_cmd;
                    peer(&format!(
                        "restic restore --quiet latest --tag tree --target {d}; \
                         {client} -e 'CREATE DATABASE {db}'; \
                         restic dump latest --tag db /db.sql | {client} {db}",
                        d = sh(&dir)
                    ))?
                    .seconds
                }
                Tool::Borg => continue,
            };
            restore.push(tool, seconds);
            fs::remove_dir_all(&dir)?;
            sandbox.sql(&format!("DROP DATABASE `{db}`;"))?;
        }
        round += 1;
    }

    // Drill: the recovery time it measures, twice.
    let mut drill = Row::default();
    let mut drill_json = Value::Null;
    for _ in 0..2 {
        let (run, json) = kc_json(&["drill", "--json"])?;
        drill_json = json.clone();
        if json["ok"] != true {
            bail!("the drill failed: {}", run.stdout);
        }
        drill.kc_rss_kb = drill.kc_rss_kb.max(run.max_rss_kb);
        drill.push(
            Tool::Kc,
            json["durations"]["total"].as_f64().unwrap_or(f64::NAN),
        );
    }

    println!();
    println!(
        "store: {} attachments, layout {}, attachments {}, SQL dump {}; kcbackup repository {}",
        store.expected.referenced.len(),
        a.layout,
        gib(du(&store.attachment_path)),
        gib(full_json["db"]["bytes"].as_u64().unwrap_or(0)),
        gib(stored),
    );
    println!("each cell: median (the runs), contenders in rotated order");
    println!(
        "{:<34} {:>22} {:>22} {:>22}",
        "", "kcbackup", "restic", "borg"
    );
    full.print("full backup");
    nightly.print(&format!("nightly backup after +{new} (1%)"));
    verify.print("verify (every stored byte)");
    restore.print("restore (+ loading the dump)");
    drill.print("drill recovery time");
    println!(
        "floors: bare dump {floor_dump:.2}s, cat of the tree {floor_read:.2}s, \
         dd write of {mib_stored} MiB (the stored bytes) with fsync {floor_write:.2}s"
    );
    let kc_phases = |j: &Value| {
        j["phases"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        format!(
                            "{} {:.2}s from {:.2}s",
                            p["name"].as_str().unwrap_or("?"),
                            p["seconds"].as_f64().unwrap_or(f64::NAN),
                            p["started_s"].as_f64().unwrap_or(f64::NAN)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("kcbackup's last full backup: {}", kc_phases(&full_json));
    println!(
        "the same with overlap = false: {:.2}s ({}); {}",
        median(&serial),
        serial
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join("/"),
        kc_phases(&serial_json)
    );
    println!(
        "kcbackup's last restore: database load {:.2}s alongside attachments {:.2}s",
        restore_json["database"]["seconds"]
            .as_f64()
            .unwrap_or(f64::NAN),
        restore_json["attachments"]["seconds"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    let d = &drill_json["durations"];
    let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "kcbackup's last drill: server start {:.2}s + database load {:.2}s, alongside them \
         attachment restore {:.2}s; config {:.2}s, checks {:.2}s; total {:.2}s",
        f("server_start"),
        f("database_load"),
        f("attachment_restore"),
        f("config_restore"),
        f("checks"),
        f("total")
    );
    println!(
        "peak RSS of kcbackup: backup {}, nightly {}, verify {}, restore {}, drill {}",
        mib(full.kc_rss_kb),
        mib(nightly.kc_rss_kb),
        mib(verify.kc_rss_kb),
        mib(restore.kc_rss_kb),
        mib(drill.kc_rss_kb)
    );
    println!("goals (issue 13):");
    let kc_full = full.get(Tool::Kc);
    goal("full backup / borg's", kc_full / full.get(Tool::Borg), 0.6);
    let floor = floor_dump.max(floor_read).max(floor_write);
    goal(
        "full backup / max(bare dump, read, write of the stored bytes)",
        kc_full / floor,
        1.5,
    );
    goal(
        "drill recovery time / full backup",
        drill.get(Tool::Kc) / kc_full,
        1.0,
    );
    goal(
        "restore / restic's",
        restore.get(Tool::Kc) / restore.get(Tool::Restic),
        0.6,
    );
    println!("  peak RSS on 1,000,000 files: a separate run, scripts/bench --many-files 1000000");

    // (a) The manual procedure, made durable with one sync at the end like kcbackup.
    let manual = root.join("manual");
    fs::create_dir_all(&manual)?;
    let script = format!(
        "set -e -o pipefail; {dump} | gzip > {m}/db.sql.gz; \
         cp -r {att} {m}/attachments; cp -r {etc} {m}/etc; sync -f {m}",
        dump = peers.dump_cmd,
        m = sh(&manual),
        att = sh(&store.attachment_path),
        etc = sh(&store.config_dir),
    );
    let manual_run = timed(&["bash", "-c", &script])?;
    let manual_bytes = du(&manual);

    // (c) verify vs sha256sum -c over the same data (the copied tree and dump).
    let list = root.join("sha256.list");
    let listing = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "cd {m} && find . -type f -print0 | xargs -0 sha256sum > {l}",
            m = sh(&manual),
            l = sh(&list)
        ))
        .status()?;
    if !listing.success() {
        bail!("could not list checksums of the manual copy");
    }
    let sums = format!("cd {} && sha256sum -c --quiet {}", sh(&manual), sh(&list));
    let sha_run = timed(&["bash", "-c", &sums])?;

    // (e) Rolling verification: the nightly backup above re-read its slice
    // (rolling_days 30); one more backup with practically no slice
    // (rolling_days 10^9) shows the same backup without it.
    let mut toml = fs::read_to_string(&config)?;
    toml.push_str("\n[verify]\nrolling_days = 1000000000\n");
    fs::write(&config, toml)?;
    let (third, third_json) = kc_json(&["backup", "--json"])?;
    let rolling = &second_json["attachments"]["rolling"];

    let full_att = phase(&full_json, "attachments");
    let second_att = phase(&second_json, "attachments");
    let full_written = full_json["attachments"]["capture"]["written_bytes"]
        .as_u64()
        .unwrap_or(0);
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
        "    kcbackup backup (full, median)",
        kc_full,
        stored,
        Some(full.kc_rss_kb),
    );
    println!(
        "    ratio {:.2} (goal <= 1.0)",
        kc_full / manual_run.seconds
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
        None,
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
        "    kcbackup verify (median)",
        verify.get(Tool::Kc),
        0,
        Some(verify.kc_rss_kb),
    );
    println!(
        "    ratio {:.2} (goal <= 0.5)",
        verify.get(Tool::Kc) / sha_run.seconds
    );
    println!(
        "    verify read {} files, {}",
        verify_json["checked_files"],
        gib(verify_json["checked_bytes"].as_u64().unwrap_or(0))
    );
    println!("(d) peak memory is the max RSS column (largest process of each run)");
    println!(
        "(e) nightly backup, rolling_days 30: rolling verification re-read {} objects, {} in {:.2}s",
        rolling["objects"],
        gib(rolling["bytes"].as_u64().unwrap_or(0)),
        phase(&second_json, "rolling verification"),
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
