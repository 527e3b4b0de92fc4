//! Prometheus metrics for node_exporter's textfile collector: after every
//! backup, verify, drill and prune, one `kcbackup_<operation>.prom`, replaced
//! atomically; a failure carries the last success time over from the old file.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Every family: name, type, help. Help texts are the same in every file,
/// as node_exporter merges the files into one exposition.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("kcbackup_info", "gauge", "kcbackup's version (always 1)."),
    (
        "kcbackup_last_success_timestamp_seconds",
        "gauge",
        "When the operation last finished successfully (Unix time).",
    ),
    (
        "kcbackup_last_run_timestamp_seconds",
        "gauge",
        "When the operation last finished, labelled with its result (success, incomplete, failure).",
    ),
    (
        "kcbackup_last_exit_code",
        "gauge",
        "The exit code of the operation's last run.",
    ),
    (
        "kcbackup_duration_seconds",
        "gauge",
        "How long each phase of the operation's last run took; phase=total for all of it.",
    ),
    (
        "kcbackup_set_bytes",
        "gauge",
        "Sizes of the last set: the dump and the attachments as captured, the bytes it added to the repository.",
    ),
    (
        "kcbackup_attachments",
        "gauge",
        "Attachments of the last set by state: referenced by the dump, present, missing, extra, corrupt.",
    ),
    (
        "kcbackup_repository_bytes",
        "gauge",
        "Bytes of all files in the repository after the run.",
    ),
    (
        "kcbackup_sets",
        "gauge",
        "Sets in the repository after the run, by status.",
    ),
    (
        "kcbackup_drill_recovery_seconds",
        "gauge",
        "The recovery time the last drill measured.",
    ),
    (
        "kcbackup_prune_removed_sets",
        "gauge",
        "Sets the last prune removed (those of an interrupted earlier prune included).",
    ),
    (
        "kcbackup_prune_deleted_objects",
        "gauge",
        "Objects the last prune deleted because no remaining set referenced them.",
    ),
    (
        "kcbackup_prune_reclaimed_bytes",
        "gauge",
        "Bytes the last prune freed: deleted objects and removed sets' files.",
    ),
];

const LAST_SUCCESS: &str = "kcbackup_last_success_timestamp_seconds";

/// One sample; the `operation` label is added when rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Sample {
        debug_assert!(FAMILIES.iter().any(|f| f.0 == name), "{name}");
        Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        }
    }
}

/// The file of `operation` in `dir`.
pub fn file_path(dir: &Path, operation: &str) -> PathBuf {
    dir.join(format!("kcbackup_{operation}.prom"))
}

/// The last success time the previous file recorded, if it can be read.
pub fn previous_success(dir: &Path, operation: &str) -> Option<f64> {
    let text = fs::read_to_string(file_path(dir, operation)).ok()?;
    text.lines()
        .filter(|l| l.starts_with(LAST_SUCCESS))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// The exposition text for `operation`'s samples, families in a fixed order.
pub fn render(operation: &str, samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let family: Vec<&Sample> = samples.iter().filter(|s| s.name == *name).collect();
        if family.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in family {
            let mut labels = format!("operation=\"{}\"", escape(operation));
            for (k, v) in &s.labels {
                let _ = write!(labels, ",{k}=\"{}\"", escape(v));
            }
            let _ = writeln!(out, "{name}{{{labels}}} {}", number(s.value));
        }
    }
    out
}

/// Writes `operation`'s file in `dir`: a temporary file in the same
/// directory, renamed over the old one, readable by node_exporter (0644).
pub fn write(dir: &Path, operation: &str, samples: &[Sample]) -> Result<PathBuf> {
    let path = file_path(dir, operation);
    let context = || format!("while writing {}", path.display());
    // A name node_exporter ignores (it reads *.prom only).
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcbackup_")
        .suffix(".prom.tmp")
        .tempfile_in(dir)
        .with_context(context)?;
    tmp.write_all(render(operation, samples).as_bytes())
        .with_context(context)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(context)?;
    Ok(path)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction; Prometheus reads both.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Bytes of all regular files under `root` (not following symlinks).
pub fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_operation_label_and_escapes() {
        let text = render(
            "backup",
            &[
                Sample::new("kcbackup_info", &[("version", "1.0\"x")], 1.0),
                Sample::new("kcbackup_duration_seconds", &[("phase", "dump")], 1.5),
            ],
        );
        assert!(text.contains("kcbackup_info{operation=\"backup\",version=\"1.0\\\"x\"} 1\n"));
        assert!(text.contains("# TYPE kcbackup_duration_seconds gauge\n"));
        assert!(text.contains("{operation=\"backup\",phase=\"dump\"} 1.5\n"));
        assert!(
            !text.contains("kcbackup_sets"),
            "empty families are left out"
        );
    }

    #[test]
    fn write_replaces_and_previous_success_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(previous_success(dir.path(), "backup"), None);
        let s = Sample::new(LAST_SUCCESS, &[], 1_700_000_000.25);
        let path = write(dir.path(), "backup", &[s]).unwrap();
        assert_eq!(path, dir.path().join("kcbackup_backup.prom"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            previous_success(dir.path(), "backup"),
            Some(1_700_000_000.25)
        );
        write(dir.path(), "backup", &[]).unwrap();
        assert_eq!(previous_success(dir.path(), "backup"), None);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }
}
