//! Rendering of command reports: a short human summary, or one JSON
//! document on stdout with `--json`.

use anyhow::Result;
use serde::Serialize;

use crate::commands::backup::BackupReport;
use crate::commands::demo::DemoReport;
use crate::commands::list::SetLine;

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
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, p.seconds))
        .collect();
    println!("  took       {:.1}s ({})", r.duration_s, phases.join(", "));
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

pub fn demo_summary(r: &DemoReport) {
    println!(
        "demo: generated a Kopano store ({} tables, {} attachment instances, storage {}) \
         in a throwaway MariaDB, then backed it up:",
        r.store.tables, r.store.referenced_instances, r.store.storage_backend
    );
    backup_summary(&r.backup);
    if r.kept {
        println!("kept {} (server stopped)", r.dir.display());
    } else {
        println!("cleaned up {}", r.dir.display());
    }
}
