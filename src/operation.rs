//! What surrounds every backup, verify, restore and drill: the `before_*`
//! hook, the run, the `after_*` and `on_failure` hooks, the metrics file and
//! the pings. None of these may change what the run itself reports, except
//! a failing `before_*` hook, which stops the run before it starts (exit 1).

use std::time::Instant;

use anyhow::Result;
use chrono::Utc;

use crate::commands::backup::BackupReport;
use crate::commands::drill::DrillReport;
use crate::commands::prune::PruneReport;
use crate::commands::restore::RestoreReport;
use crate::commands::verify::VerifyReport;
use crate::crossref::CrossRef;
use crate::error::{Exit, exit_for};
use crate::hooks;
use crate::metrics::{self, Sample};
use crate::notify::Pinger;
use crate::repo::Repository;
use crate::settings::Settings;
use crate::settings::tool::HookSpec;
use crate::signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Verify,
    Restore,
    Drill,
    Prune,
    Forget,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Verify => "verify",
            Operation::Restore => "restore",
            Operation::Drill => "drill",
            Operation::Prune => "prune",
            Operation::Forget => "forget",
        }
    }

    /// Operations that write `kcbackup_<operation>.prom`.
    fn has_metrics(self) -> bool {
        !matches!(self, Operation::Restore | Operation::Forget)
    }

    fn hooks(self, s: &Settings) -> (Option<&HookSpec>, Option<&HookSpec>) {
        let h = &s.hooks;
        match self {
            Operation::Backup => (h.before_backup.as_ref(), h.after_backup.as_ref()),
            Operation::Restore => (h.before_restore.as_ref(), h.after_restore.as_ref()),
            Operation::Drill => (h.before_drill.as_ref(), h.after_drill.as_ref()),
            Operation::Verify | Operation::Prune | Operation::Forget => (None, None),
        }
    }

    fn ping_url(self, s: &Settings) -> Option<&str> {
        match self {
            Operation::Backup => s.notify.ping_url.as_deref(),
            Operation::Drill => s.notify.drill_ping_url.as_deref(),
            _ => None,
        }
    }
}

/// What a finished run tells its hooks and metrics.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub set: Option<String>,
    /// The set's status: `complete` or `incomplete`.
    pub status: Option<String>,
    pub phases: Vec<(String, f64)>,
    /// `dump`, `attachments`, `added`.
    pub set_bytes: Vec<(&'static str, u64)>,
    pub attachments: Option<CrossRef>,
    pub recovery_seconds: Option<f64>,
    /// What a prune removed: sets, objects, bytes.
    pub prune: Option<PruneCounts>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PruneCounts {
    pub sets_removed: u64,
    pub objects_deleted: u64,
    pub bytes_reclaimed: u64,
}

/// Runs `body` as `op`, with everything around it; returns its result.
pub fn run(
    settings: &Settings,
    op: Operation,
    body: impl FnOnce() -> Result<(Exit, Facts)>,
) -> Result<Exit> {
    // Before the first hook, so that a signal during it still ends in cleanup.
    signals::install()?;
    let clock = Instant::now();
    let pinger = op
        .ping_url(settings)
        .map(|url| Pinger::new(url, settings.notify.timeout_seconds));
    if let Some(p) = &pinger {
        p.start();
    }
    let (before, after) = op.hooks(settings);
    let mut ctx = hooks::Context {
        operation: op.name().to_owned(),
        repository: settings.repository.to_string(),
        ..Default::default()
    };
    let timeout = settings.hooks.timeout_seconds;
    let before_result = match before {
        Some(spec) => hooks::run(&format!("before_{}", op.name()), spec, timeout, &ctx, true)
            // A hook ended by our SIGTERM: the exit code says so (143).
            .map_err(signals::explain),
        None => Ok(()),
    };
    let ran_body = before_result.is_ok();
    let result = before_result.and_then(|()| body());

    let (exit, facts, error) = match &result {
        Ok((exit, facts)) => (*exit, facts.clone(), None),
        Err(e) => (exit_for(e), Facts::default(), Some(format!("{e:#}"))),
    };
    ctx.set = facts.set.clone();
    ctx.status = Some(match (&error, &facts.status) {
        (None, Some(status)) => status.clone(),
        (None, None) if exit == Exit::Ok => "complete".into(),
        _ => "failed".into(),
    });
    ctx.exit_code = Some(exit as i32);
    ctx.error = error.clone().or_else(|| {
        (exit != Exit::Ok).then(|| format!("{} ended with exit code {}", op.name(), exit as i32))
    });

    if ran_body && let Some(spec) = after {
        let name = format!("after_{}", op.name());
        // Not cut short by a signal: it may have to undo what before_* did.
        if let Err(e) = hooks::run(&name, spec, timeout, &ctx, false) {
            eprintln!("kcbackup: warning: {e:#}");
        }
    }
    if exit != Exit::Ok
        && let Some(spec) = &settings.hooks.on_failure
        && let Err(e) = hooks::run("on_failure", spec, timeout, &ctx, false)
    {
        eprintln!("kcbackup: warning: {e:#}");
    }
    if op.has_metrics()
        && let Some(dir) = &settings.metrics.textfile_dir
    {
        let samples = samples(settings, op, exit, &facts, clock.elapsed().as_secs_f64());
        if let Err(e) = metrics::write(dir, op.name(), &samples) {
            eprintln!("kcbackup: warning: no metrics written: {e:#}");
        }
    }
    if let Some(p) = &pinger {
        p.finish(exit as i32, ctx.error.as_deref().unwrap_or(""));
    }
    result.map(|(exit, _)| exit)
}

fn result_label(exit: Exit) -> &'static str {
    match exit {
        Exit::Ok => "success",
        Exit::Incomplete => "incomplete",
        _ => "failure",
    }
}

fn samples(
    settings: &Settings,
    op: Operation,
    exit: Exit,
    facts: &Facts,
    seconds: f64,
) -> Vec<Sample> {
    let now = Utc::now().timestamp_millis() as f64 / 1000.0;
    let dir = settings.metrics.textfile_dir.as_deref();
    let last_success = if exit == Exit::Ok {
        Some(now)
    } else {
        dir.and_then(|d| metrics::previous_success(d, op.name()))
    };
    let mut s = vec![Sample::new(
        "kcbackup_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    )];
    if let Some(t) = last_success {
        s.push(Sample::new(
            "kcbackup_last_success_timestamp_seconds",
            &[],
            t,
        ));
    }
    s.push(Sample::new(
        "kcbackup_last_run_timestamp_seconds",
        &[("result", result_label(exit))],
        now,
    ));
    s.push(Sample::new(
        "kcbackup_last_exit_code",
        &[],
        exit as i32 as f64,
    ));
    s.push(Sample::new(
        "kcbackup_duration_seconds",
        &[("phase", "total")],
        seconds,
    ));
    for (phase, secs) in &facts.phases {
        s.push(Sample::new(
            "kcbackup_duration_seconds",
            &[("phase", phase)],
            *secs,
        ));
    }
    for (kind, bytes) in &facts.set_bytes {
        s.push(Sample::new(
            "kcbackup_set_bytes",
            &[("kind", kind)],
            *bytes as f64,
        ));
    }
    if let Some(a) = &facts.attachments {
        for (state, n) in [
            ("referenced", a.referenced),
            ("present", a.present),
            ("missing", a.missing),
            ("extra", a.extra),
            ("corrupt", a.corrupt),
        ] {
            s.push(Sample::new(
                "kcbackup_attachments",
                &[("state", state)],
                n as f64,
            ));
        }
    }
    if let Some(r) = facts.recovery_seconds {
        s.push(Sample::new("kcbackup_drill_recovery_seconds", &[], r));
    }
    if let Some(p) = &facts.prune {
        for (name, value) in [
            ("kcbackup_prune_removed_sets", p.sets_removed),
            ("kcbackup_prune_deleted_objects", p.objects_deleted),
            ("kcbackup_prune_reclaimed_bytes", p.bytes_reclaimed),
        ] {
            s.push(Sample::new(name, &[], value as f64));
        }
    }
    // Object storage is not listed after every run: LIST costs grow with the store.
    if let Some(root) = settings.repository.local()
        && root.join("sets").is_dir()
    {
        s.push(Sample::new(
            "kcbackup_repository_bytes",
            &[],
            metrics::tree_bytes(root) as f64,
        ));
        // An encrypted repository's sets are counted only by a run that can read them.
        if let Ok(sets) = Repository::open_at(&settings.repository)
            .and_then(|r| r.storage().check_readable().and_then(|()| r.sets()))
        {
            for status in ["complete", "incomplete", "damaged"] {
                let n = sets.iter().filter(|x| x.status() == status).count();
                s.push(Sample::new(
                    "kcbackup_sets",
                    &[("status", status)],
                    n as f64,
                ));
            }
        }
    }
    s
}

/// The set's status as the repository has it, if it can be read.
fn set_status(settings: &Settings, set: &str) -> Option<String> {
    let repo = Repository::open_at(&settings.repository).ok()?;
    Some(repo.resolve(set).ok()?.status().to_owned())
}

pub fn backup_facts(settings: &Settings, r: &BackupReport) -> Facts {
    let added = Repository::open_at(&settings.repository)
        .and_then(|repo| repo.resolve(&r.set))
        .ok()
        .and_then(|s| s.manifest.ok())
        .map_or(0, |m| m.added_bytes());
    Facts {
        set: Some(r.set.clone()),
        status: Some(r.status.as_str().to_owned()),
        phases: r
            .phases
            .iter()
            .map(|p| (p.name.clone(), p.seconds))
            .collect(),
        set_bytes: vec![
            ("dump", r.db.bytes),
            ("attachments", r.attachments.capture.bytes),
            ("added", added),
        ],
        attachments: Some(r.attachments.proof.clone()),
        recovery_seconds: None,
        prune: None,
    }
}

pub fn verify_facts(settings: &Settings, r: &VerifyReport) -> Facts {
    Facts {
        set: Some(r.set.clone()),
        status: set_status(settings, &r.set),
        attachments: r.attachments.clone(),
        ..Facts::default()
    }
}

pub fn restore_facts(settings: &Settings, r: &RestoreReport) -> Facts {
    Facts {
        set: Some(r.set.clone()),
        status: set_status(settings, &r.set),
        ..Facts::default()
    }
}

pub fn drill_facts(settings: &Settings, r: &DrillReport) -> Facts {
    let d = &r.durations;
    Facts {
        set: Some(r.set.clone()),
        status: set_status(settings, &r.set),
        phases: [
            ("server_start", d.server_start),
            ("database_load", d.database_load),
            ("attachment_restore", d.attachment_restore),
            ("config_restore", d.config_restore),
            ("checks", d.checks),
            ("cleanup", d.cleanup),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect(),
        recovery_seconds: Some(d.total),
        ..Facts::default()
    }
}

pub fn prune_facts(_settings: &Settings, r: &PruneReport) -> Facts {
    Facts {
        prune: Some(PruneCounts {
            sets_removed: (r.sets_removed.len() + r.finished_earlier.len()) as u64,
            objects_deleted: r.objects_deleted,
            bytes_reclaimed: r.bytes_reclaimed,
        }),
        ..Facts::default()
    }
}
