//! The Kopano configuration directory as one archive in the set
//! (`config.tar.zst`), each file's checksum listed in the manifest. Symlinks
//! are archived as links and never followed; sockets and devices are only listed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::attachments::{EntryKind, IndexEntry};
use crate::repo::digest::HashReader;
use crate::walk::{Walked, Walker};

/// What the set holds of the configuration directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigInfo {
    pub source: PathBuf,
    /// The archive's name in the set; empty when the directory was missing.
    pub file: String,
    /// Every entry, in walk order; files with their SHA-256.
    pub entries: Vec<IndexEntry>,
    /// What a human should know: links pointing outside, files that
    /// changed while read, things that are listed but not archived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Archives `config_dir` into `out` (a zstd-compressed tar).
pub fn capture(config_dir: &Path, out: &Path, file_name: &str) -> Result<ConfigInfo> {
    let mut info = ConfigInfo {
        source: config_dir.to_path_buf(),
        ..ConfigInfo::default()
    };
    if !config_dir.is_dir() {
        info.notes.push(format!(
            "{} does not exist: not captured",
            config_dir.display()
        ));
        return Ok(info);
    }
    info.file = file_name.to_string();
    let file = File::create(out).with_context(|| format!("while creating {}", out.display()))?;
    let mut tar = tar::Builder::new(zstd::Encoder::new(BufWriter::new(file), 9)?);
    tar.follow_symlinks(false);
    for walked in Walker::new(config_dir)? {
        match walked? {
            Walked::Entry { rel, meta } => {
                let mut entry = IndexEntry::from_meta(rel, &meta);
                add(&mut tar, config_dir, &mut entry, &meta, &mut info.notes).with_context(
                    || format!("while archiving {}", config_dir.join(&entry.path).display()),
                )?;
                info.entries.push(entry);
            }
            Walked::Vanished { rel } => info.notes.push(format!("{rel}: vanished while archiving")),
            Walked::Skipped { rel, reason } => info.notes.push(format!("{rel}: {reason}")),
            // This walk follows no symlink.
            Walked::Followed { rel, .. } | Walked::NotFollowed { rel, .. } => info.notes.push(
                format!("{rel}: a symlink the walk met unexpectedly, skipped"),
            ),
        }
    }
    tar.into_inner()?
        .finish()?
        .flush()
        .with_context(|| format!("while writing {}", out.display()))?;
    Ok(info)
}

fn add<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    entry: &mut IndexEntry,
    meta: &std::fs::Metadata,
    notes: &mut Vec<String>,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let path = root.join(&entry.path);
    match entry.kind {
        EntryKind::Dir => {
            header.set_size(0);
            tar.append_data(&mut header, &entry.path, io::empty())?;
        }
        EntryKind::Symlink => {
            let target = std::fs::read_link(&path)?;
            if points_outside(root, &entry.path, &target) {
                notes.push(format!(
                    "{} -> {}: points outside {}, recorded, not followed",
                    entry.path,
                    target.display(),
                    root.display()
                ));
            }
            header.set_size(0);
            tar.append_link(&mut header, &entry.path, &target)?;
            entry.target = Some(target.to_string_lossy().into_owned());
        }
        EntryKind::Other => {
            notes.push(format!(
                "{}: not a regular file, directory or symlink (mode {:o}); listed, not archived",
                entry.path,
                meta.mode()
            ));
        }
        EntryKind::File => {
            let file = File::open(&path)?;
            let before = file.metadata()?;
            let size = before.len();
            header.set_metadata_in_mode(&before, tar::HeaderMode::Complete);
            header.set_size(size);
            // The header promises `size` bytes: a file that shrank is padded,
            // so the archive stays readable, and the checksum is of what was archived.
            let mut data = HashReader::new(Padded {
                inner: file.take(size),
                left: size,
                short: false,
            });
            tar.append_data(&mut header, &entry.path, &mut data)?;
            let short = data.get_ref().short;
            let (bytes, sha256) = data.finish();
            let after = std::fs::metadata(&path).ok();
            if short || after.is_none_or(|a| a.len() != size || a.mtime() != before.mtime()) {
                notes.push(format!(
                    "{}: changed while being archived; archived as read",
                    entry.path
                ));
            }
            entry.size = bytes;
            entry.sha256 = Some(sha256);
        }
    }
    Ok(())
}

/// Reads `inner`, then zeros up to `left` bytes if it ended early.
struct Padded<R> {
    inner: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// True when a link at `rel` (relative to `root`) with `target` leads out of `root`.
fn points_outside(root: &Path, rel: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return !target.starts_with(root);
    }
    let mut depth: i64 = rel.matches('/').count() as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Re-reads an archive and compares each file with the listed checksums.
/// Returns `(path, detail)` for every difference.
pub fn check(archive: &Path, expected: &[IndexEntry]) -> Result<Vec<(String, String)>> {
    let file =
        File::open(archive).with_context(|| format!("while opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(zstd::Decoder::new(file)?);
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in tar
        .entries()
        .with_context(|| format!("while reading {}", archive.display()))?
    {
        let entry = entry.with_context(|| format!("while reading {}", archive.display()))?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if entry.header().entry_type() != tar::EntryType::Regular {
            seen.insert(path);
            continue;
        }
        let mut hashed = HashReader::new(entry);
        io::copy(&mut hashed, &mut io::sink())
            .with_context(|| format!("while reading {path} in {}", archive.display()))?;
        let (bytes, sha256) = hashed.finish();
        match expected.iter().find(|e| e.path == path) {
            Some(e) if e.sha256.as_deref() == Some(sha256.as_str()) && e.size == bytes => {}
            Some(_) => problems.push((path.clone(), "content differs from the manifest".into())),
            None => problems.push((path.clone(), "archived but not in the manifest".into())),
        }
        seen.insert(path);
    }
    for e in expected {
        if e.kind != EntryKind::Other && !seen.contains(&e.path) {
            problems.push((
                e.path.clone(),
                "listed in the manifest but not archived".into(),
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::digest::sha256_hex;
    use std::fs;

    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kopano");
        fs::create_dir_all(root.join("ssl")).unwrap();
        fs::write(root.join("server.cfg"), "mysql_password = a#b\n").unwrap();
        fs::write(root.join("ssl/key.pem"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
        std::os::unix::fs::symlink("ssl/key.pem", root.join("inside")).unwrap();
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        dir
    }

    #[test]
    fn archives_files_with_checksums_and_records_links_and_sockets() {
        let dir = sample();
        let root = dir.path().join("kopano");
        let out = dir.path().join("config.tar.zst");
        let info = capture(&root, &out, "config.tar.zst").unwrap();
        let find = |p: &str| info.entries.iter().find(|e| e.path == p).unwrap();
        assert_eq!(
            find("server.cfg").sha256.as_deref(),
            Some(sha256_hex(b"mysql_password = a#b\n").as_str())
        );
        assert_eq!(find("outside").target.as_deref(), Some("/etc/passwd"));
        assert_eq!(find("sock").kind, EntryKind::Other);
        assert!(
            info.notes
                .iter()
                .any(|n| n.starts_with("outside -> /etc/passwd"))
        );
        assert!(!info.notes.iter().any(|n| n.starts_with("inside")));
        assert!(info.notes.iter().any(|n| n.starts_with("sock:")));
        assert!(check(&out, &info.entries).unwrap().is_empty());

        // The archive holds the link itself, not /etc/passwd's content.
        let mut tar = tar::Archive::new(zstd::Decoder::new(File::open(&out).unwrap()).unwrap());
        let link = tar
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("outside"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(link.size(), 0);
    }

    #[test]
    fn check_names_a_file_whose_listed_checksum_differs() {
        let dir = sample();
        let root = dir.path().join("kopano");
        let out = dir.path().join("config.tar.zst");
        let mut info = capture(&root, &out, "config.tar.zst").unwrap();
        for e in info.entries.iter_mut().filter(|e| e.path == "ssl/key.pem") {
            e.sha256 = Some(sha256_hex(b"other"));
        }
        let problems = check(&out, &info.entries).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "ssl/key.pem");
    }

    #[test]
    fn a_missing_directory_is_noted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let info = capture(&dir.path().join("nope"), &dir.path().join("c.tar.zst"), "c").unwrap();
        assert!(info.file.is_empty());
        assert!(info.notes[0].contains("does not exist"));
    }

    #[test]
    fn relative_links_that_climb_out_are_outside() {
        let root = Path::new("/etc/kopano");
        assert!(points_outside(root, "a", Path::new("../x")));
        assert!(!points_outside(root, "sub/a", Path::new("../x")));
        assert!(points_outside(root, "sub/a", Path::new("../../x")));
        assert!(!points_outside(root, "a", Path::new("/etc/kopano/b")));
        assert!(points_outside(root, "a", Path::new("/etc/passwd")));
    }
}
