//! Rendering of command reports: a short human summary, or one JSON
//! document on stdout with `--json`.

use anyhow::Result;
use serde::Serialize;

use crate::commands::backup::BackupReport;
use crate::commands::demo::DemoReport;
use crate::commands::drill::DrillReport;
use crate::commands::list::SetLine;
use crate::commands::prune::PruneReport;
use crate::commands::restore::RestoreReport;
use crate::commands::verify::VerifyReport;

/// Prints `value` as one pretty JSON document on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn backup_summary(r: &BackupReport) {
    println!("set {} {}", r.set, r.status.as_str());
    println!(
        "  database   {} tables, {} rows, {} SQL -> {} stored in {} chunks ({} new, {}), \
         sha256 {}",
        r.db.tables,
        r.db.rows,
        bytes(r.db.bytes),
        bytes(r.db.stored_bytes),
        r.db.chunks,
        r.db.new_chunks,
        bytes(r.db.new_bytes),
        &r.db.sha256[..r.db.sha256.len().min(16)]
    );
    println!(
        "  kopano     version {}, storage {}",
        r.kopano_version.as_deref().unwrap_or("unknown"),
        r.storage_backend.as_deref().unwrap_or("unknown")
    );
    let a = &r.attachments;
    let c = &a.capture;
    println!(
        "  attachments {} referenced, {} present, {} missing, {} extra, {} leftovers{}",
        a.proof.referenced,
        a.proof.present,
        a.proof.missing,
        a.proof.extra,
        a.proof.leftovers,
        if a.proof.corrupt > 0 {
            format!(", {} CORRUPT", a.proof.corrupt)
        } else {
            String::new()
        }
    );
    println!(
        "  captured   {} files, {}: {} read, {} unchanged; {} new objects, {} written",
        c.files,
        bytes(c.bytes),
        c.read_files,
        c.reused,
        c.new_objects,
        bytes(c.written_bytes)
    );
    for link in &c.followed {
        println!("  followed   {link} (captured as if in place)");
    }
    if c.followed_dirs as usize > c.followed.len() {
        println!(
            "  followed   ... {} more directory links",
            c.followed_dirs as usize - c.followed.len()
        );
    }
    if let Some(v) = &a.rolling {
        println!(
            "  rolling    {} objects, {} re-read in {:.1}s (slice {} of {}: every object once per {} backups){}",
            v.objects,
            bytes(v.bytes),
            v.seconds,
            v.slice,
            v.rolling_days,
            v.rolling_days,
            if v.corrupt.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} CORRUPT, {} written again",
                    v.corrupt.len(),
                    v.rewritten
                )
            }
        );
    }
    println!(
        "  config     {} entries, {} from {}",
        r.config.entries,
        bytes(r.config.bytes),
        r.config.source.display()
    );
    match r.snapshot.window_ms {
        Some(ms) => println!(
            "  snapshot   {} {}, taken {ms} ms after the dump's transaction began",
            r.snapshot.method.as_str(),
            r.snapshot.name.as_deref().unwrap_or("")
        ),
        None => println!("  snapshot   {}", r.snapshot_note),
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            // `[backup] overlap`: said, so the phases need not add up.
            match r.phases[..i].iter().find(|earlier| p.overlaps(earlier)) {
                Some(earlier) => format!(
                    "{} {:.1}s alongside the {}",
                    p.name, p.seconds, earlier.name
                ),
                None => format!("{} {:.1}s", p.name, p.seconds),
            }
        })
        .collect();
    println!("  took       {:.1}s ({})", r.duration_s, phases.join(", "));
}

/// On stderr: why the set is incomplete, with the missing instance ids.
pub fn incomplete(r: &BackupReport) {
    let p = &r.attachments.proof;
    let ids: Vec<String> = p.missing_ids.iter().map(u32::to_string).collect();
    if let Some(first) = r.not_restorable.first() {
        eprintln!(
            "kcbackup: set {} is INCOMPLETE: restore would refuse it: {first}{}",
            r.set,
            match r.not_restorable.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        );
    }
    if p.is_complete() {
        return;
    }
    eprintln!(
        "kcbackup: set {} is INCOMPLETE: {} of {} referenced attachment instances missing, {} corrupt",
        r.set, p.missing, p.referenced, p.corrupt
    );
    if !ids.is_empty() {
        let more = if p.missing as usize > ids.len() {
            " ..."
        } else {
            ""
        };
        eprintln!("missing instance ids: {}{more}", ids.join(" "));
    }
    for path in &p.corrupt_paths {
        eprintln!("corrupt: {path}");
    }
}

pub fn verify_summary(r: &VerifyReport) {
    println!(
        "set {} {}: {} files, {} checked in {:.1}s",
        r.set,
        if r.ok {
            "OK".to_string()
        } else {
            format!("FAILED ({} problems)", r.problems_total)
        },
        r.checked_files,
        bytes(r.checked_bytes),
        r.seconds
    );
    if let Some(a) = &r.attachments {
        println!(
            "  attachments {} referenced, {} present, {} missing, {} corrupt",
            a.referenced, a.present, a.missing, a.corrupt
        );
    }
    for p in &r.problems {
        println!("  {:<18} {}: {}", p.kind, p.path, p.detail);
    }
    if r.problems_total > r.problems.len() as u64 {
        println!("  ... {} problems in all", r.problems_total);
    }
}

/// The sets, then a total line: `repository_bytes` is every file of the
/// repository (objects shared by several sets counted once).
pub fn list(lines: &[SetLine], repository_bytes: u64) {
    if lines.is_empty() {
        println!("no sets");
        return;
    }
    println!(
        "{:<22} {:<20} {:<11} {:>10} {:>10}  {:<26} tag",
        "set", "time", "status", "size", "added", "last drill"
    );
    for l in lines {
        let time = l
            .time
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let drill = l
            .last_drill
            .as_ref()
            .map(|d| {
                format!(
                    "{} {} {:.0}s",
                    d.time.format("%Y-%m-%d %H:%M"),
                    if d.ok { "pass" } else { "FAIL" },
                    d.recovery_s
                )
            })
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<22} {:<20} {:<11} {:>10} {:>10}  {:<26} {}",
            l.id,
            time,
            l.status,
            bytes(l.logical_bytes),
            bytes(l.added_bytes),
            drill,
            l.tag.as_deref().unwrap_or("")
        );
        if let Some(p) = &l.problem {
            println!("  {p}");
        }
    }
    let complete = lines.iter().filter(|l| l.status == "complete").count();
    println!(
        "total: {} sets ({complete} complete), repository {}",
        lines.len(),
        bytes(repository_bytes)
    );
}

pub fn demo_summary(r: &DemoReport) {
    println!(
        "demo: generated a Kopano store ({} tables, {} attachment instances, storage {}) \
         in a throwaway MariaDB, then backed it up:",
        r.store.tables, r.store.referenced_instances, r.store.storage_backend
    );
    backup_summary(&r.backup);
    println!();
    verify_summary(&r.verify);
    println!();
    drill_summary(&r.drill);
    println!();
    if r.kept {
        println!("kept {} (server stopped)", r.dir.display());
    } else {
        println!("cleaned up {}", r.dir.display());
    }
}

pub fn restore_summary(r: &RestoreReport) {
    println!("restored set {} in {:.1}s", r.set, r.seconds);
    if let Some(db) = &r.database {
        println!(
            "  database    `{}`: {} of SQL in {:.1}s",
            db.database,
            bytes(db.bytes),
            db.seconds
        );
    }
    for (what, tree) in [("attachments", &r.attachments), ("config", &r.config)] {
        if let Some(t) = tree {
            println!(
                "  {what:<11} {}: {} files, {} in {:.1}s, checksums verified",
                t.target.display(),
                t.files,
                bytes(t.bytes),
                t.seconds
            );
            if let Some(q) = &t.quarantine {
                println!(
                    "              {} files moved aside into {}",
                    t.quarantined,
                    q.display()
                );
            }
        }
    }
    if let Some(b) = &r.bucket {
        println!(
            "  objects     bucket {} at {}: {} objects, {} in {:.1}s, checksums verified",
            b.bucket,
            b.endpoint,
            b.objects,
            bytes(b.bytes),
            b.seconds
        );
        if let Some(q) = &b.quarantine {
            println!(
                "              {} objects the set does not hold moved under {q}",
                b.quarantined
            );
        }
    }
    for note in &r.notes {
        println!("  note: {note}");
    }
}

pub fn drill_summary(r: &DrillReport) {
    println!(
        "drill of set {}: {}",
        r.set,
        if r.ok { "PASSED" } else { "FAILED" }
    );
    for c in &r.checks {
        println!(
            "  [{}] {:<22} {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let d = &r.durations;
    println!(
        "  recovery time {:.1}s: server start {:.1}s, database load {:.1}s, attachments {:.1}s, \
         config {:.1}s, checks {:.1}s, cleanup {:.1}s",
        d.total,
        d.server_start,
        d.database_load,
        d.attachment_restore,
        d.config_restore,
        d.checks,
        d.cleanup
    );
    println!(
        "  restored {} of SQL ({} tables, {} rows), {} files ({})",
        bytes(r.sql_bytes),
        r.tables,
        r.rows,
        r.files,
        bytes(r.attachment_bytes)
    );
    if let Some(dir) = &r.kept {
        println!("  kept {} (server stopped)", dir.display());
    }
    if let Some(why) = &r.not_recorded {
        println!("  NOT recorded in the repository: {why}");
    }
}

/// `list --long SET`: what one set holds and what it cost the repository.
#[derive(Debug, Clone, Serialize)]
pub struct SetStats {
    pub set: String,
    pub status: String,
    pub tag: Option<String>,
    pub started: chrono::DateTime<chrono::Utc>,
    /// SQL text plus attachments, uncompressed.
    pub logical_bytes: u64,
    /// The set's own files plus the attachment objects it stored first.
    pub added_bytes: u64,
    /// `logical_bytes / added_bytes`: how much compression and sharing
    /// objects with earlier sets saved.
    pub dedup_ratio: f64,
    pub dump_bytes: u64,
    pub dump_stored_bytes: u64,
    /// Attachment files in the set (one object each), and the new ones.
    pub objects: u64,
    pub new_objects: u64,
    pub new_object_bytes: u64,
    pub phases: Vec<crate::repo::manifest::Phase>,
}

impl SetStats {
    pub fn of(m: &crate::repo::manifest::Manifest) -> SetStats {
        let c = &m.attachments.capture;
        let logical = m.database.bytes + c.bytes;
        let added = m.added_bytes();
        SetStats {
            set: m.set.clone(),
            status: m.status.as_str().to_owned(),
            tag: m.tag.clone(),
            started: m.started,
            logical_bytes: logical,
            added_bytes: added,
            dedup_ratio: if added == 0 {
                0.0
            } else {
                logical as f64 / added as f64
            },
            dump_bytes: m.database.bytes,
            dump_stored_bytes: m.database.stored_bytes,
            objects: c.files,
            new_objects: c.new_objects,
            new_object_bytes: c.written_bytes,
            phases: m.phases.clone(),
        }
    }
}

pub fn set_stats(s: &SetStats) {
    println!("set        {}", s.set);
    println!("status     {}", s.status);
    println!("tag        {}", s.tag.as_deref().unwrap_or("-"));
    println!("started    {}", s.started.format("%Y-%m-%d %H:%M:%S UTC"));
    println!(
        "size       {} ({} database, {} attachments)",
        bytes(s.logical_bytes),
        bytes(s.dump_bytes),
        bytes(s.logical_bytes - s.dump_bytes)
    );
    println!(
        "added      {} (dedup ratio {:.1}x)",
        bytes(s.added_bytes),
        s.dedup_ratio
    );
    println!(
        "dump       {} stored as {}",
        bytes(s.dump_bytes),
        bytes(s.dump_stored_bytes)
    );
    println!(
        "objects    {} ({} new, {})",
        s.objects,
        s.new_objects,
        bytes(s.new_object_bytes)
    );
    for p in &s.phases {
        println!("phase      {:<12} {:.1}s", p.name, p.seconds);
    }
}

/// Each set with keep or remove and the rules that keep it, then what the
/// run removed (or, with --dry-run, would remove).
pub fn prune_summary(r: &PruneReport) {
    let dry = if r.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let rules = if r.command == "prune" {
        format!(
            "rules: {} (buckets in {} time)",
            r.rules.join(", "),
            r.time_zone.unwrap_or("local")
        )
    } else {
        format!("forget: {}", r.rules.join(", "))
    };
    println!("{}{dry}; {rules}", r.command);
    for v in &r.sets {
        println!(
            "  {:<6} {:<20} {:<10} {:<12} {}",
            v.action,
            v.id,
            v.status,
            v.tag.as_deref().unwrap_or("-"),
            v.reasons.join(", ")
        );
    }
    if !r.finished_earlier.is_empty() {
        println!(
            "finishing an interrupted prune: {}",
            r.finished_earlier.join(", ")
        );
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} set(s), {} object(s), {} reclaimed; {} object(s) still referenced; {:.1} s",
        r.sets_removed.len(),
        r.objects_deleted,
        bytes(r.bytes_reclaimed),
        r.objects_live,
        r.seconds
    );
    if r.quarantined_objects > 0 {
        println!(
            "{} quarantined object(s) in objects/.corrupt/ kept for inspection",
            r.quarantined_objects
        );
    }
}

pub fn copy_summary(r: &crate::commands::copy::CopyReport) {
    println!("copy {} -> {}", r.from, r.to);
    for s in &r.sets {
        let detail = match &s.error {
            Some(e) => e.clone(),
            None => format!(
                "{} objects sent, {} already there, {} sent",
                s.objects.sent,
                s.objects.present,
                bytes(s.objects.bytes + s.file_bytes)
            ),
        };
        println!("  {:<8} {:<20} {detail}", s.outcome, s.set);
    }
    println!(
        "{} sent ({} objects; {} the target had), {:.1}s",
        bytes(r.bytes_sent),
        r.objects_sent,
        r.objects_present,
        r.seconds
    );
}
