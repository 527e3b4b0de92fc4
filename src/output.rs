//! Rendering of command reports: a short human summary, or one JSON
//! document on stdout with `--json`.

use anyhow::Result;
use serde::Serialize;

use crate::commands::backup::BackupReport;
use crate::commands::list::SetLine;
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
        "  database   {} tables, {} rows, {} SQL -> {} stored, sha256 {}",
        r.db.tables,
        r.db.rows,
        bytes(r.db.bytes),
        bytes(r.db.stored_bytes),
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
    println!(
        "  config     {} entries, {} from {}",
        r.config.entries,
        bytes(r.config.bytes),
        r.config.source.display()
    );
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, p.seconds))
        .collect();
    println!("  took       {:.1}s ({})", r.duration_s, phases.join(", "));
}

/// On stderr: why the set is incomplete, with the missing instance ids.
pub fn incomplete(r: &BackupReport) {
    let p = &r.attachments.proof;
    let ids: Vec<String> = p.missing_ids.iter().map(u32::to_string).collect();
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

pub fn list(lines: &[SetLine]) {
    if lines.is_empty() {
        println!("no sets");
        return;
    }
    println!(
        "{:<22} {:<20} {:<11} {:>10}  tag",
        "set", "time", "status", "size"
    );
    for l in lines {
        let time = l
            .time
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        println!(
            "{:<22} {:<20} {:<11} {:>10}  {}",
            l.id,
            time,
            l.status,
            bytes(l.bytes),
            l.tag.as_deref().unwrap_or("")
        );
        if let Some(p) = &l.problem {
            println!("  {p}");
        }
    }
}
