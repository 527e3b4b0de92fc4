//! `kcbackup upgrade prepare` and `finish`: the manual's upgrade procedure
//! (kopano-facts.md section 5) as two commands. A failed preparation starts
//! again whatever it stopped, so the mail system is never left down.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::census::{Census, Change};
use crate::commands::{backup, verify};
use crate::error::{Damaged, Exit};
use crate::preflight;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::manifest::{SetStatus, UpgradeMark};
use crate::services::{self, Outcome, ServiceManager, State};
use crate::settings::Settings;
use crate::signals;

/// The tag of the sets `prepare` takes.
pub const TAG: &str = "pre-upgrade";
/// Where the censuses live in the repository: `censuses/<set>.json`.
pub use crate::repo::storage::CENSUSES as CENSUS_DIR;

#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// A hot backup: nothing is stopped.
    pub keep_running: bool,
}

/// One service and what was done to it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceLine {
    pub name: String,
    /// `stopped`, `started`, `was not running`, `already running`, `not installed`.
    pub done: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrepareReport {
    pub set: String,
    /// `true` with `--keep-running`.
    pub hot: bool,
    /// What was stopped, in stop order; it stays stopped for the upgrade.
    pub stopped: Vec<String>,
    pub services: Vec<ServiceLine>,
    pub space: preflight::Space,
    pub verified_files: u64,
    pub census: Census,
    /// The census's key in the repository.
    pub census_record: String,
    pub rollback_command: String,
    pub warnings: Vec<String>,
}

/// Runs the preparation; on any failure after something was stopped, the
/// stopped services are started again (start order) before the error returns.
pub fn prepare(
    settings: &Settings,
    opts: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<PrepareReport> {
    signals::install()?;
    // 1. Nothing stops before every check passed.
    preflight::check(settings).context("preflight failed; nothing was stopped")?;
    let space = preflight::check_space(settings)?;
    let manager = ServiceManager::new(&settings.upgrade);
    let mut stopped = Vec::new();
    let mut lines = Vec::new();
    let result = prepare_stopped(
        settings,
        opts,
        progress,
        &manager,
        &mut stopped,
        &mut lines,
        space,
    );
    match result {
        Ok(report) => Ok(report),
        Err(err) if stopped.is_empty() => Err(err),
        Err(err) => {
            let restarted = start_again(settings, &manager, &stopped);
            Err(err.context(restarted))
        }
    }
}

fn prepare_stopped(
    settings: &Settings,
    opts: &PrepareOptions,
    progress: &dyn Progress,
    manager: &ServiceManager,
    stopped: &mut Vec<String>,
    lines: &mut Vec<ServiceLine>,
    space: preflight::Space,
) -> Result<PrepareReport> {
    // 2. MTA, services, optional services; each really down before the next.
    if !opts.keep_running {
        for name in services::stop_order(&settings.upgrade) {
            signals::check()?;
            let outcome = manager
                .stop(&name)
                .with_context(|| format!("while stopping {name}"))?;
            let done = match outcome {
                Outcome::Changed => {
                    stopped.push(name.clone());
                    "stopped"
                }
                Outcome::Already => "was not running",
                Outcome::NotInstalled => "not installed, skipped",
            };
            tracing::info!("{name}: {done}");
            lines.push(ServiceLine {
                name,
                done: done.into(),
            });
        }
        signals::check()?;
    }

    // 3. The backup of a quiescent database, then a full verify.
    let backup_opts = backup::BackupOptions {
        tag: Some(TAG.into()),
        upgrade: Some(UpgradeMark {
            services_stopped: !opts.keep_running,
            stopped: stopped.clone(),
        }),
        ..Default::default()
    };
    let report = backup::run(settings, &backup_opts, progress)?;
    if report.status != SetStatus::Complete {
        return Err(Damaged(format!(
            "the pre-upgrade set {} is incomplete: {}",
            report.set,
            report.warnings.join("; ")
        ))
        .into());
    }
    signals::check()?;
    let checked = verify::run(
        settings,
        &verify::VerifyOptions {
            set: report.set.clone(),
        },
        progress,
    )?;
    if !checked.ok {
        let first: Vec<String> = checked
            .problems
            .iter()
            .take(5)
            .map(|p| format!("{} {}: {}", p.kind, p.path, p.detail))
            .collect();
        return Err(Damaged(format!(
            "verify of the pre-upgrade set {} found {} problems: {}",
            report.set,
            checked.problems_total,
            first.join("; ")
        ))
        .into());
    }
    signals::check()?;

    // 4. The census beside the set.
    let census = Census::take(settings)?;
    let repo = Repository::open_at(&settings.repository)?;
    let lock = repo.lock_shared("upgrade prepare")?;
    let census_record = repo
        .write_record(
            &lock,
            CENSUS_DIR,
            &report.set,
            &serde_json::to_vec_pretty(&census)?,
        )
        .context("while recording the census")?;
    drop(lock);
    signals::check()?;

    let mut warnings = report.warnings.clone();
    if opts.keep_running {
        warnings.push(
            "--keep-running: a hot backup, taken while the services ran (marked so in the manifest)"
                .into(),
        );
    }
    Ok(PrepareReport {
        rollback_command: rollback_command(settings, &report.set),
        set: report.set,
        hot: opts.keep_running,
        stopped: stopped.clone(),
        services: lines.clone(),
        space,
        verified_files: checked.checked_files,
        census,
        census_record,
        warnings,
    })
}

/// Starts `stopped` again in the manual's start order; says what happened.
fn start_again(settings: &Settings, manager: &ServiceManager, stopped: &[String]) -> String {
    let mut started = Vec::new();
    let mut failed = Vec::new();
    for name in services::start_order(&settings.upgrade, stopped) {
        match manager.start(&name) {
            Ok(_) => started.push(name),
            Err(e) => failed.push(format!("{name} ({e:#})")),
        }
    }
    let mut text = format!("started again: {}", started.join(", "));
    if !failed.is_empty() {
        text.push_str(&format!(
            "; COULD NOT START {}: start them by hand",
            failed.join(", ")
        ));
    }
    text
}

/// The command that puts the set back into production.
pub fn rollback_command(settings: &Settings, set: &str) -> String {
    let mut argv = vec!["kcbackup".to_string()];
    if let Some(file) = &settings.config_file {
        argv.push("--config".into());
        argv.push(quote(&file.display().to_string()));
    }
    argv.extend([
        "upgrade".into(),
        "rollback".into(),
        quote(set),
        "--yes".into(),
    ]);
    argv.join(" ")
}

/// A word as a POSIX shell reads it back: plain words as they are, others
/// in single quotes.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@+,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FinishReport {
    /// The pre-upgrade set whose census is compared.
    pub set: String,
    pub services: Vec<ServiceLine>,
    /// Services that would not start.
    pub failed: Vec<String>,
    pub before: Census,
    pub after: Census,
    pub changes: Vec<Change>,
    /// `/etc/kopano/*.cfg` against the new examples (when they are there).
    pub configs: Vec<ConfigDiff>,
    pub notes: Vec<String>,
}

/// One config file against its new example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub file: String,
    /// Options the example has (set or commented out) that the live file
    /// does not mention.
    pub new_options: Vec<String>,
    /// Options the live file sets that the example no longer knows.
    pub unknown_options: Vec<String>,
}

/// Compares every `*.cfg` in `examples` with the file of that name in
/// `live`; files equal in their options are left out. A missing example
/// directory is no finding (not every package ships one).
pub fn compare_example_configs(live: &Path, examples: &Path) -> Result<Vec<ConfigDiff>> {
    let Ok(entries) = std::fs::read_dir(examples) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let live_file = live.join(&name);
        let Ok(live_text) = std::fs::read(&live_file) else {
            continue;
        };
        let example_file = examples.join(&name);
        let example_text = std::fs::read(&example_file)
            .with_context(|| format!("while reading {}", example_file.display()))?;
        let (live_set, live_mentioned) = options(&String::from_utf8_lossy(&live_text));
        let (_, example_known) = options(&String::from_utf8_lossy(&example_text));
        let diff = ConfigDiff {
            new_options: example_known.difference(&live_mentioned).cloned().collect(),
            unknown_options: live_set.difference(&example_known).cloned().collect(),
            file: name,
        };
        if !diff.new_options.is_empty() || !diff.unknown_options.is_empty() {
            out.push(diff);
        }
    }
    Ok(out)
}

/// The options a Kopano config file sets, and those it sets or shows
/// commented out (`#name = value`, as the examples document defaults).
fn options(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut set = BTreeSet::new();
    let mut mentioned = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let (commented, rest) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let Some((key, _)) = rest.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let is_key = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !is_key {
            continue;
        }
        if !commented {
            set.insert(key.to_string());
        }
        mentioned.insert(key.to_string());
    }
    (set, mentioned)
}

impl FinishReport {
    /// 1 when a service failed to start, else 3 when a count differs, else 0.
    pub fn exit(&self) -> Exit {
        if !self.failed.is_empty() {
            Exit::Failure
        } else if !self.changes.is_empty() {
            Exit::Incomplete
        } else {
            Exit::Ok
        }
    }
}

/// Starts the services in the manual's order, then compares the census
/// with the newest pre-upgrade set's.
pub fn finish(settings: &Settings) -> Result<FinishReport> {
    signals::install()?;
    let repo = Repository::open_at(&settings.repository)?;
    // The newest complete pre-upgrade set with a census: a set of the APT
    // hook (`backup --tag pre-upgrade`) has none and is passed over.
    let censuses: std::collections::BTreeMap<String, Vec<u8>> =
        repo.records(CENSUS_DIR)?.into_iter().collect();
    let (set, stopped, before) = repo
        .sets()?
        .into_iter()
        .rev()
        .find_map(|s| {
            let m = s.manifest.ok()?;
            if m.tag.as_deref() != Some(TAG) || m.status != SetStatus::Complete {
                return None;
            }
            let bytes = censuses.get(&format!("{CENSUS_DIR}/{}.json", s.id))?;
            let census: Census = serde_json::from_slice(bytes).ok()?;
            Some((
                s.id,
                m.upgrade.map(|u| u.stopped).unwrap_or_default(),
                census,
            ))
        })
        .ok_or_else(|| {
            anyhow!(
                "the repository holds no complete pre-upgrade set with a census; \
                 run `kcbackup upgrade prepare` before the upgrade"
            )
        })?;

    let manager = ServiceManager::new(&settings.upgrade);
    let (lines, failed) = start_after_upgrade(settings, &manager, &stopped);
    let configs =
        compare_example_configs(&settings.config_dir, &settings.upgrade.example_config_dir)?;

    let after = Census::take(settings)?;
    let changes = after.changes_since(&before);
    let mut notes = Vec::new();
    if after.version == before.version {
        notes.push(format!(
            "the versions row did not advance ({}): was the server upgraded and started?",
            after.version.as_deref().unwrap_or("none")
        ));
    }
    if before
        .version
        .as_deref()
        .and_then(major_minor)
        .is_some_and(|v| v < (8, 2))
    {
        notes.push(
            "upgraded from a version below 8.2.0: run kopano-search-upgrade-findroots.py".into(),
        );
    }
    if after.user_safe_mode {
        notes.push(
            "user_safe_mode = yes in server.cfg: switch it off once the upgrade is tested".into(),
        );
    }
    Ok(FinishReport {
        set,
        services: lines,
        failed,
        before,
        after,
        changes,
        configs,
        notes,
    })
}

/// `finish`'s start phase (also rollback's): kopano-server, kopano-spooler,
/// the optional services `prepare` stopped, the MTA, each checked running;
/// then a running web server restarted. What was done, and what failed.
fn start_after_upgrade(
    settings: &Settings,
    manager: &ServiceManager,
    stopped: &[String],
) -> (Vec<ServiceLine>, Vec<String>) {
    // kopano-server, kopano-spooler, the optional ones prepare stopped, the MTA.
    let u = &settings.upgrade;
    let mut order: Vec<String> = u.services.iter().rev().cloned().collect();
    order.extend(
        u.optional_services
            .iter()
            .filter(|s| stopped.contains(s))
            .cloned(),
    );
    order.extend(u.mta.iter().cloned());
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for name in order {
        let done = match manager.start(&name) {
            Ok(Outcome::Changed) => "started".to_string(),
            Ok(Outcome::Already) => "already running".to_string(),
            Ok(Outcome::NotInstalled) => "not installed, skipped".to_string(),
            Err(e) => {
                failed.push(name.clone());
                format!("FAILED: {e:#}")
            }
        };
        lines.push(ServiceLine { name, done });
    }
    // php-mapi changes with upgrades: a running web server is restarted.
    for name in &u.web_servers {
        let done = match manager.status(name) {
            Ok(State::Running) => match manager.stop(name).and_then(|_| manager.start(name)) {
                Ok(_) => "restarted".to_string(),
                Err(e) => {
                    failed.push(name.clone());
                    format!("FAILED to restart: {e:#}")
                }
            },
            Ok(State::Stopped) => "not running, left alone".to_string(),
            Ok(State::NotInstalled) => "not installed, skipped".to_string(),
            Err(e) => format!("status unknown, left alone: {e:#}"),
        };
        lines.push(ServiceLine {
            name: name.clone(),
            done,
        });
    }
    (lines, failed)
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub set: String,
    /// Services found running and stopped before the restore.
    pub stopped: Vec<String>,
    pub restore: crate::commands::restore::RestoreReport,
    /// The whole /etc/kopano as it was before the rollback.
    pub config_kept: PathBuf,
    pub services: Vec<ServiceLine>,
    pub failed: Vec<String>,
    /// The Kopano version the set was taken from: what to downgrade to.
    pub downgrade_to: Option<String>,
}

/// Puts the newest (or the named) pre-upgrade set back into production
/// with the services stopped, then starts them as `finish` does. A failed
/// restore leaves the services stopped: they must not run on half a restore.
pub fn rollback(settings: &Settings, set: Option<&str>, yes: bool) -> Result<RollbackReport> {
    if !yes {
        return Err(crate::error::ConfigError(
            "upgrade rollback replaces the live database, attachments and /etc/kopano: \
             run it again with --yes"
                .into(),
        )
        .into());
    }
    signals::install()?;
    let repo = Repository::open_at(&settings.repository)?;
    let info = match set {
        Some(id) => repo.resolve(id)?,
        None => repo
            .sets()?
            .into_iter()
            .rev()
            .find(|s| {
                s.manifest
                    .as_ref()
                    .is_ok_and(|m| m.tag.as_deref() == Some(TAG) && m.status == SetStatus::Complete)
            })
            .ok_or_else(|| anyhow!("the repository holds no complete pre-upgrade set"))?,
    };
    let manifest = info
        .manifest
        .clone()
        .map_err(|e| Damaged(format!("set {} cannot be restored: {e}", info.id)))?;
    let prepared_stopped = manifest
        .upgrade
        .clone()
        .map(|u| u.stopped)
        .unwrap_or_default();
    drop(repo);

    let manager = ServiceManager::new(&settings.upgrade);
    let mut stopped = Vec::new();
    for name in services::stop_order(&settings.upgrade) {
        if manager
            .stop(&name)
            .with_context(|| format!("while stopping {name}; nothing was restored"))?
            == Outcome::Changed
        {
            stopped.push(name);
        }
    }
    signals::check()?;
    let config_kept = keep_config(&settings.config_dir)?;
    // An s3 store's objects go back into the bucket they came from (stale
    // ones quarantined), not into the attachment path as files.
    let bucket = manifest.attachments.s3.as_ref().map(|s| s.bucket.clone());
    let restore = crate::commands::restore::run(
        settings,
        &crate::commands::restore::RestoreOptions {
            set: info.id.clone(),
            to_database: Some(settings.mysql.database.clone()),
            to_attachments: bucket
                .is_none()
                .then(|| settings.attachment_path.clone()),
            to_bucket: bucket,
            to_config: Some(settings.config_dir.clone()),
            mysql: None,
            force: true,
            ..Default::default()
        },
    )
    .with_context(|| {
        format!(
            "the rollback to set {} failed; the services stay stopped (the config before it is in {})",
            info.id,
            config_kept.display()
        )
    })?;
    let mut all_stopped = prepared_stopped;
    all_stopped.extend(stopped.iter().cloned());
    let (services, failed) = start_after_upgrade(settings, &manager, &all_stopped);
    Ok(RollbackReport {
        set: info.id,
        stopped,
        restore,
        config_kept,
        services,
        failed,
        downgrade_to: manifest.kopano.version.clone(),
    })
}

/// Copies the config directory as it is now beside it
/// (`<dir>.before-rollback-<time>`), links as links.
fn keep_config(dir: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = format!(
        "{}.before-rollback-{stamp}",
        dir.file_name()
            .map_or("config".into(), |n| n.to_string_lossy())
    );
    let target = dir.with_file_name(name);
    copy_tree(dir, &target).with_context(|| {
        format!(
            "while keeping {} as {} before the rollback",
            dir.display(),
            target.display()
        )
    })?;
    Ok(target)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// `rollback`'s human output.
pub fn print_rollback(r: &RollbackReport) {
    println!("set {} restored into production", r.set);
    println!(
        "the config before the rollback: {}",
        r.config_kept.display()
    );
    for s in &r.services {
        println!("{}: {}", s.name, s.done);
    }
    println!(
        "kcbackup does not touch packages: downgrade the Kopano packages to {}",
        r.downgrade_to
            .as_deref()
            .unwrap_or("the version the set was taken from")
    );
}

fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', ' ']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `prepare`'s human output.
pub fn print_prepare(r: &PrepareReport) {
    for s in &r.services {
        println!("{}: {}", s.name, s.done);
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "pre-upgrade set {} written and verified ({} files checked){}",
        r.set,
        r.verified_files,
        if r.hot { ", hot backup" } else { "" }
    );
    println!("census ({}):\n{}", r.census_record, r.census.render());
    if r.stopped.is_empty() {
        println!("nothing was stopped");
    } else {
        println!(
            "stopped for the upgrade: {} (run `kcbackup upgrade finish` afterwards)",
            r.stopped.join(", ")
        );
    }
    println!(
        "to roll back (with the services stopped):\n  {}",
        r.rollback_command
    );
}

/// `finish`'s human output: the checklist side by side.
pub fn print_finish(r: &FinishReport) {
    for s in &r.services {
        println!("{}: {}", s.name, s.done);
    }
    println!("checklist against pre-upgrade set {}:", r.set);
    let mut items: Vec<(&String, u64)> = r
        .before
        .users
        .iter()
        .chain(&r.before.stores)
        .chain(r.before.relations.iter().flatten())
        .map(|(k, v)| (k, *v))
        .collect();
    for c in &r.changes {
        if !items.iter().any(|(k, _)| *k == &c.item) {
            items.push((&c.item, 0));
        }
    }
    for (item, before) in items {
        match r.changes.iter().find(|c| &c.item == item) {
            Some(c) => println!(
                "  {item}: {before} -> {} ({:+})",
                c.after,
                c.after as i64 - c.before as i64
            ),
            None => println!("  {item}: {before} (equal)"),
        }
    }
    println!(
        "  version: {} -> {}",
        r.before.version.as_deref().unwrap_or("none"),
        r.after.version.as_deref().unwrap_or("none")
    );
    for c in &r.configs {
        for o in &c.new_options {
            println!(
                "config: {} lacks the new option {o} (see the example)",
                c.file
            );
        }
        for o in &c.unknown_options {
            println!(
                "config: {} sets {o}, which the new example no longer knows",
                c.file
            );
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_name_new_and_dropped_options() {
        let live = tempfile::tempdir().unwrap();
        let examples = tempfile::tempdir().unwrap();
        std::fs::write(
            live.path().join("server.cfg"),
            "# comment\nserver_name = x\nold_option = 1\n#documented = yes\n",
        )
        .unwrap();
        std::fs::write(
            examples.path().join("server.cfg"),
            "server_name = Kopano\n#documented = no\n#new_option = 3\nfresh = 1\n",
        )
        .unwrap();
        std::fs::write(examples.path().join("gateway.cfg"), "a = 1\n").unwrap();
        let diffs = compare_example_configs(live.path(), examples.path()).unwrap();
        assert_eq!(
            diffs,
            vec![ConfigDiff {
                file: "server.cfg".into(),
                new_options: vec!["fresh".into(), "new_option".into()],
                unknown_options: vec!["old_option".into()],
            }]
        );
        assert!(
            compare_example_configs(live.path(), &live.path().join("absent"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_rollback_command_quotes_what_a_shell_would_split() {
        assert_eq!(quote("/var/lib/kopano"), "/var/lib/kopano");
        assert_eq!(quote("it's here"), "'it'\\''s here'");
    }
}
