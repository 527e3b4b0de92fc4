//! Benchmark: a month of nightly backups with kcbackup, restic and borg side
//! by side on one generated store in a throwaway MariaDB. Run through
//! `scripts/bench-nightly` (see its header for the options and defaults).
//!
//! Night 0 is the first, full backup. Each night after it changes the store
//! (generator::nightly: 1% new messages with an attachment, 2% read flags
//! toggled and 1% of messages moved by UPDATEs in place, 0.5% deleted and
//! purged), then each contender backs up and prunes (7 daily, 4 weekly) at a
//! simulated date, in an order that rotates per night. Bytes are apparent
//! sizes (sum of file lengths) of each repository, in MB of 10^6 bytes.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{Days, NaiveDate};
use kcbackup::generator::{self, GeneratedStore, nightly};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;
use support::{Peers, TOOLS, Tool, du, kcbackup_binary, phase, run, shell_quote};

/// Retention, the same for all three.
const KEEP: &[&str] = &["--keep-daily", "7", "--keep-weekly", "4"];
/// Per night, in percent of the messages there are.
const NEW_PCT: f64 = 1.0;
const READ_PCT: f64 = 2.0;
const MOVE_PCT: f64 = 1.0;
const DELETE_PCT: f64 = 0.5;

struct Args {
    nights: u32,
    attachments: u64,
    attachment_kb: u64,
    db_mb: u64,
    start: NaiveDate,
    dir: PathBuf,
    keep: bool,
    /// Another kcbackup binary than target/release/kcbackup.
    kcbackup: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        nights: 30,
        attachments: 7000,
        attachment_kb: 220,
        db_mb: 160,
        start: NaiveDate::from_ymd_opt(2026, 11, 1).context("start date")?,
        dir: std::env::temp_dir(),
        keep: false,
        kcbackup: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nights" => a.nights = value()?.parse()?,
            "--attachments" => a.attachments = value()?.parse()?,
            "--attachment-kb" => a.attachment_kb = value()?.parse()?,
            "--db-mb" => a.db_mb = value()?.parse()?,
            "--start" => a.start = value()?.parse().context("--start wants YYYY-MM-DD")?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--keep" => a.keep = true,
            "--kcbackup" => a.kcbackup = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Everything the contenders need, set up once.
struct Bench {
    kc: PathBuf,
    kc_config: PathBuf,
    kc_repo: PathBuf,
    kc_prune: bool,
    peers: Peers,
}

/// What one night's backup did for one contender.
#[derive(Debug, Clone, Copy, Default)]
struct Backup {
    seconds: f64,
    added: i64,
    /// kcbackup: its dump phase; others: the dump piped in.
    dump_seconds: f64,
    /// kcbackup: the SQL dump's size.
    dump_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    backup_s: f64,
    added: i64,
    prune_s: f64,
}

impl Bench {
    fn repo(&self, tool: Tool) -> &Path {
        match tool {
            Tool::Kc => &self.kc_repo,
            Tool::Restic => &self.peers.restic_repo,
            Tool::Borg => &self.peers.borg_repo,
        }
    }

    /// A command under libfaketime at `date` (its clock starts there and
    /// runs on; monotonic clocks stay real), with the tools' environment.
    fn at(&self, date: &str, program: &Path) -> Command {
        let mut c = Command::new("faketime");
        c.args(["-m", "--exclude-monotonic", date]).arg(program);
        self.peers.env(&mut c);
        c
    }

    fn bash(&self, date: &str, script: &str) -> Result<(f64, String)> {
        let mut c = self.at(date, Path::new("/bin/bash"));
        c.arg("-c").arg(format!("set -euo pipefail\n{script}"));
        run(c).with_context(|| format!("while running {script:?} at {date}"))
    }

    fn backup(&self, tool: Tool, date: &str) -> Result<Backup> {
        let repo = self.repo(tool);
        let before = du(repo) as i64;
        let mut dump_bytes = 0;
        let (seconds, dump_seconds) = match tool {
            Tool::Kc => {
                let mut c = self.at(date, &self.kc);
                c.arg("--config")
                    .arg(&self.kc_config)
                    .args(["backup", "--json"]);
                let (s, out) = run(c).context("while running kcbackup backup")?;
                let report: Value =
                    serde_json::from_str(&out).context("while reading kcbackup's --json")?;
                dump_bytes = report["db"]["bytes"].as_u64().unwrap_or(0);
                (s, phase(&report, "dump"))
            }
            Tool::Restic | Tool::Borg => {
                let extra = match tool {
                    Tool::Restic => format!("--time {}", shell_quote(date)),
                    _ => String::new(),
                };
                let [dump, tree] = self.peers.backup_scripts(tool, &extra, &date[..10]);
                let (d, _) = self.bash(date, &dump)?;
                let (f, _) = self.bash(date, &tree)?;
                (d + f, d)
            }
        };
        Ok(Backup {
            seconds,
            added: du(repo) as i64 - before,
            dump_seconds,
            dump_bytes,
        })
    }

    /// Seconds, or None when kcbackup has no prune yet.
    fn prune(&self, tool: Tool, date: &str) -> Result<Option<f64>> {
        let keep = KEEP.join(" ");
        let s = match tool {
            Tool::Kc if !self.kc_prune => return Ok(None),
            Tool::Kc => {
                let mut c = self.at(date, &self.kc);
                c.arg("--config")
                    .arg(&self.kc_config)
                    .arg("prune")
                    .args(KEEP);
                run(c).context("while running kcbackup prune")?.0
            }
            Tool::Restic => {
                self.bash(date, &format!("restic forget --quiet {keep} --prune"))?
                    .0
            }
            // Each night makes two archives: prune each series on its own.
            Tool::Borg => {
                self.bash(
                    date,
                    &format!(
                        "borg prune {keep} -a 'db-*'\nborg prune {keep} -a 'files-*'\nborg compact"
                    ),
                )?
                .0
            }
        };
        Ok(Some(s))
    }

    /// The days of the nights each one keeps, from its own listing.
    fn kept(&self, tool: Tool) -> Result<Vec<String>> {
        let date = "2000-01-01 00:00:00";
        let day = |v: &Value| v.as_str().map(|t| t.chars().take(10).collect::<String>());
        let mut days: Vec<String> = match tool {
            Tool::Kc => {
                let mut c = Command::new(&self.kc);
                c.arg("--config")
                    .arg(&self.kc_config)
                    .args(["list", "--json"]);
                let list: Value = serde_json::from_str(&run(c)?.1)?;
                let sets = list["sets"].as_array().or(list.as_array()).cloned();
                sets.unwrap_or_default()
                    .iter()
                    .filter_map(|s| day(&s["time"]))
                    .collect()
            }
            Tool::Restic => {
                let (_, out) = self.bash(date, "restic snapshots --json --path /db.sql")?;
                let snaps: Value = serde_json::from_str(&out)?;
                snaps
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|s| day(&s["time"]))
                    .collect()
            }
            Tool::Borg => self
                .bash(date, "borg list --short -a 'db-*'")?
                .1
                .lines()
                .filter_map(|l| l.strip_prefix("db-").map(str::to_string))
                .collect(),
        };
        days.sort();
        Ok(days)
    }
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1e6
}

/// Disk usage (allocated blocks) of a tree, from `du`.
fn disk_usage(path: &Path) -> Result<u64> {
    let out = Command::new("du")
        .arg("-s")
        .arg("--block-size=1")
        .arg(path)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("while reading du's output")
}

fn count(sandbox: &Sandbox, store: &GeneratedStore, sql: &str) -> Result<u64> {
    let out = sandbox.sql(&format!("USE `{}`;\n{sql}\n", store.database))?;
    out.trim().parse().context("while reading a count")
}

fn main() -> Result<()> {
    let a = args()?;
    for tool in ["faketime", "restic", "borg"] {
        if Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is missing: apt-get install faketime restic borgbackup");
        }
    }
    let work = tempfile::Builder::new()
        .prefix("kcnightly-")
        .tempdir_in(&a.dir)?;
    let root = work.path().canonicalize()?;
    println!("work directory: {}", root.display());
    let wall = Instant::now();

    let spec = support::bench_spec(
        Layout::FilesV1 { l1: 10, l2: 20 },
        a.attachments,
        a.attachment_kb,
        a.db_mb,
    );
    let sandbox = Sandbox::start(&SandboxOptions {
        parent_dir: Some(a.dir.clone()),
        keep: false,
        ..SandboxOptions::default()
    })?;
    let clock = Instant::now();
    let mut store = generator::generate(&sandbox, &root.join("store"), &spec)?;
    nightly::add_message_flags(&sandbox, &mut store)?;
    println!(
        "generated {} messages, {} attachment files ({:.0} MB) in {:.0}s",
        count(
            &sandbox,
            &store,
            "SELECT COUNT(*) FROM hierarchy WHERE type = 5"
        )?,
        store.expected.data_files.len(),
        mb(du(&store.attachment_path) as i64),
        clock.elapsed().as_secs_f64()
    );

    let kc_repo = root.join("kcbackup-repo");
    let kc_config = store.write_tool_config(&root, &kc_repo)?;
    let kc = match &a.kcbackup {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("while resolving --kcbackup {}", path.display()))?,
        None => kcbackup_binary()?,
    };
    let kc_prune = Command::new(&kc)
        .args(["prune", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let bench = Bench {
        kc,
        kc_config,
        kc_repo,
        kc_prune,
        peers: Peers::new(&root, &store)?,
    };
    let setup = "2000-01-01 00:00:00";
    bench.bash(
        setup,
        "restic init --quiet --repository-version 2 >/dev/null",
    )?;
    bench.bash(setup, "borg init --encryption none")?;
    if !bench.kc_prune {
        println!(
            "NOTE: `kcbackup prune --help` fails: this kcbackup has no prune, its prune step is skipped"
        );
    }
    println!(
        "each night: +{NEW_PCT}% messages (one new attachment each), {READ_PCT}% read flags \
         toggled, {MOVE_PCT}% moved, {DELETE_PCT}% deleted and purged; then backup and prune {}",
        KEEP.join(" ")
    );
    println!(
        "dates: {} 02:00 + night (libfaketime; restic, a Go program, gets --time); \
         MB = 10^6 bytes of apparent size added to the repository",
        a.start
    );
    println!(
        "restic: repository v2, default compression; borg: --encryption none, --compression zstd,3"
    );
    println!(
        "(borg's rules do not count archives an earlier rule keeps, so the same flags keep more nights)"
    );
    println!();
    println!(
        "{:>5} {:<10} {:>5} {:>5} {:>5} {:>5} | {:>15} | {:>15} | {:>15} | {:>5} {:>5} | {:>5} {:>5} {:>5}",
        "night",
        "date",
        "new",
        "read",
        "moved",
        "del",
        "kcbackup s  MB",
        "restic s  MB",
        "borg s  MB",
        "kcdmp",
        "bare",
        "pr kc",
        "restc",
        "borg"
    );

    let mut totals = [Totals::default(); 3];
    let mut first = [Backup::default(); 3];
    let mut kc_dump = Vec::new();
    let mut bare_dump = Vec::new();
    let mut dump_bytes = 0;
    for night in 0..=a.nights {
        let day = a
            .start
            .checked_add_days(Days::new(u64::from(night)))
            .context("date overflow")?;
        let date = format!("{day} 02:00:00");
        let (mut new, mut read, mut moved, mut deleted) = (0, 0, 0, 0);
        if night > 0 {
            let m = count(
                &sandbox,
                &store,
                "SELECT COUNT(*) FROM hierarchy WHERE type = 5",
            )? as f64;
            let seed = u64::from(night) * 1000;
            new = ((m * NEW_PCT / 100.0).ceil() as u32).max(1);
            generator::add_attachments(&sandbox, &mut store, new, seed)?;
            let n = |pct: f64| ((m * pct / 100.0).round() as usize).max(1);
            read = nightly::toggle_read(&sandbox, &mut store, n(READ_PCT), seed + 1)?.len();
            moved = nightly::move_messages(&sandbox, &store, n(MOVE_PCT), seed + 2)?.len();
            deleted = nightly::delete_messages(&sandbox, &mut store, n(DELETE_PCT), seed + 3)?
                .messages
                .len();
        }
        // Whoever runs first meets a cold page cache and clean writeback.
        let mut order = TOOLS;
        order.rotate_left(night as usize % 3);
        let mut backups = [Backup::default(); 3];
        for tool in order {
            let i = TOOLS.iter().position(|t| *t == tool).unwrap_or(0);
            backups[i] = bench.backup(tool, &date)?;
        }
        let (bare, _) = run({
            let mut c = Command::new("/bin/bash");
            c.arg("-c").arg(format!(
                "set -o pipefail; {} > /dev/null",
                bench.peers.dump_cmd
            ));
            c
        })?;
        let mut prunes = [None; 3];
        for tool in order {
            let i = TOOLS.iter().position(|t| *t == tool).unwrap_or(0);
            prunes[i] = bench.prune(tool, &date)?;
        }
        let p = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.2}"));
        println!(
            "{night:>5} {day:<10} {new:>5} {read:>5} {moved:>5} {deleted:>5} | {:>6.1} {:>8.1} | {:>6.1} {:>8.1} | {:>6.1} {:>8.1} | {:>5.2} {:>5.2} | {:>5} {:>5} {:>5}",
            backups[0].seconds,
            mb(backups[0].added),
            backups[1].seconds,
            mb(backups[1].added),
            backups[2].seconds,
            mb(backups[2].added),
            backups[0].dump_seconds,
            bare,
            p(prunes[0]),
            p(prunes[1]),
            p(prunes[2]),
        );
        if night == 0 {
            first = backups;
        } else {
            for i in 0..3 {
                totals[i].backup_s += backups[i].seconds;
                totals[i].added += backups[i].added;
                totals[i].prune_s += prunes[i].unwrap_or(0.0);
            }
            kc_dump.push(backups[0].dump_seconds);
            bare_dump.push(bare);
        }
        dump_bytes = backups[0].dump_bytes;
    }

    let nights = f64::from(a.nights.max(1));
    println!();
    println!(
        "{:<10} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14} {:>6}",
        "", "full s", "full MB", "nights s", "nights MB", "prune s", "repo MB", "kept"
    );
    for (i, tool) in TOOLS.into_iter().enumerate() {
        let repo = bench.repo(tool);
        println!(
            "{:<10} {:>12.1} {:>14.1} {:>12.1} {:>14.1} {:>12} {:>14.1} {:>6}",
            tool.name(),
            first[i].seconds,
            mb(first[i].added),
            totals[i].backup_s,
            mb(totals[i].added),
            if tool == Tool::Kc && !bench.kc_prune {
                "skipped".to_string()
            } else {
                format!("{:.1}", totals[i].prune_s)
            },
            mb(du(repo) as i64),
            bench.kept(tool)?.len(),
        );
    }
    println!(
        "(nights = nights 1..{}: sums; per night on average: kcbackup {:.1} MB, restic {:.1} MB, borg {:.1} MB)",
        a.nights,
        mb(totals[0].added) / nights,
        mb(totals[1].added) / nights,
        mb(totals[2].added) / nights,
    );
    for tool in TOOLS {
        let repo = bench.repo(tool);
        println!(
            "{:<10} repository: {:.1} MB apparent, {:.1} MB on disk (du)",
            tool.name(),
            mb(du(repo) as i64),
            mb(disk_usage(repo)? as i64)
        );
    }
    for tool in TOOLS {
        let days: Vec<String> = bench
            .kept(tool)?
            .iter()
            .map(|d| d.get(5..).unwrap_or(d).to_string())
            .collect();
        println!("{:<10} keeps the nights of {}", tool.name(), days.join(" "));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "dump of {:.0} MB: kcbackup's dump phase median {:.2}s (total {:.1}s) against mariadb-dump > /dev/null median {:.2}s (total {:.1}s)",
        mb(dump_bytes as i64),
        median(&mut kc_dump.clone()),
        kc_dump.iter().sum::<f64>(),
        median(&mut bare_dump.clone()),
        bare_dump.iter().sum::<f64>(),
    );
    println!(
        "store after {} nights: {:.0} MB of attachments",
        a.nights,
        mb(du(&store.attachment_path) as i64)
    );

    println!("wall time {:.0}s", wall.elapsed().as_secs_f64());
    if a.keep {
        let kept = work.keep();
        println!("kept {} (database server stopped)", kept.display());
    }
    sandbox.stop()?;
    Ok(())
}
