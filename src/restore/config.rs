//! Unpacking the set's `config.tar.zst` into a directory: every path is
//! checked, every file compared with the checksum the manifest lists, and
//! symlinks pointing outside the target are listed, not created.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::files::{TreeRestore, set_dir_meta};
use super::paths::{apply_attributes, create_parents, create_private, safe_join};
use crate::attachments::{EntryKind, IndexEntry};
use crate::error::damaged;
use crate::repo::digest::HashWriter;

/// Extracts `archive` into `target` (prepared by the caller).
pub fn restore_config(
    archive: &Path,
    entries: &[IndexEntry],
    target: &Path,
    report: &mut TreeRestore,
    notes: &mut Vec<String>,
) -> Result<()> {
    let started = Instant::now();
    let as_root = nix::unistd::geteuid().is_root();
    let listed: HashMap<&str, &IndexEntry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    fs::create_dir_all(target).with_context(|| format!("while creating {}", target.display()))?;
    report.target = target.to_path_buf();
    let file =
        fs::File::open(archive).with_context(|| format!("while opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(zstd::Decoder::new(file)?);
    let mut seen = std::collections::HashSet::new();
    let mut dirs = Vec::new();
    for item in tar
        .entries()
        .with_context(|| format!("while reading {}", archive.display()))?
    {
        let mut item = item.with_context(|| format!("while reading {}", archive.display()))?;
        let rel = item
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let path = safe_join(target, Path::new(&rel))?;
        let Some(entry) = listed.get(rel.as_str()) else {
            return damaged(format!(
                "{rel} is in the config archive but not in the manifest: the set was tampered with"
            ));
        };
        seen.insert(entry.path.as_str());
        match item.header().entry_type() {
            tar::EntryType::Directory => {
                create_parents(&path)?;
                if !path.is_dir() {
                    fs::create_dir(&path)
                        .with_context(|| format!("while creating {}", path.display()))?;
                }
                dirs.push((path, *entry));
                report.dirs += 1;
            }
            tar::EntryType::Regular => {
                create_parents(&path)?;
                let _ = fs::remove_file(&path);
                let out = create_private(&path)?;
                let mut out = HashWriter::new(out);
                io::copy(&mut item, &mut out).with_context(|| format!("while restoring {rel}"))?;
                let (out, bytes, sha256) = out.finish();
                if entry.kind != EntryKind::File
                    || entry.sha256.as_deref() != Some(sha256.as_str())
                    || entry.size != bytes
                {
                    let _ = fs::remove_file(&path);
                    return damaged(format!(
                        "{rel}: the restored config file does not match the manifest's checksum"
                    ));
                }
                apply_attributes(&out, entry, as_root)?;
                report.files += 1;
                report.bytes += bytes;
            }
            tar::EntryType::Symlink => {
                let link = item
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let inside = !Path::new(&link).is_absolute()
                    && safe_join(target, &Path::new(&rel).with_file_name(&link)).is_ok();
                if !inside {
                    notes.push(format!(
                        "{rel} -> {link}: points outside the target, not created"
                    ));
                    report.skipped += 1;
                    continue;
                }
                create_parents(&path)?;
                let _ = fs::remove_file(&path);
                std::os::unix::fs::symlink(&link, &path)?;
                report.symlinks += 1;
            }
            _ => report.skipped += 1,
        }
    }
    if let Some(lost) = entries
        .iter()
        .find(|e| e.kind == EntryKind::File && !seen.contains(e.path.as_str()))
    {
        bail!(
            "{}: listed in the manifest but not in the config archive: the set is damaged",
            lost.path
        );
    }
    for (path, entry) in dirs.iter().rev() {
        set_dir_meta(path, entry, as_root)
            .with_context(|| format!("while restoring the attributes of {}", path.display()))?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(())
}
