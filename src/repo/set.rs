//! One backup set: written in a hidden work directory, made visible by a
//! single rename after the manifest (written last) and every file are
//! fsynced. A run that dies leaves only a hidden directory.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::WORK_PREFIX;
use super::digest::{file_digest, sha256_hex};
use super::manifest::{FileEntry, MANIFEST, MANIFEST_SUM, Manifest, SetStatus};

/// A set being written.
pub struct WorkSet {
    id: String,
    dir: PathBuf,
    final_dir: PathBuf,
    published: bool,
}

impl WorkSet {
    /// Picks an id from the start time (`20261129T190455Z`, with `-2`, `-3`
    /// ... when that second is taken) and creates the hidden directory.
    pub fn create(sets_dir: &Path, started: DateTime<Utc>) -> Result<WorkSet> {
        let base = started.format("%Y%m%dT%H%M%SZ").to_string();
        let mut id = base.clone();
        let mut n = 1;
        while sets_dir.join(&id).exists() || sets_dir.join(format!("{WORK_PREFIX}{id}")).exists() {
            n += 1;
            id = format!("{base}-{n}");
        }
        let dir = sets_dir.join(format!("{WORK_PREFIX}{id}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        Ok(WorkSet {
            final_dir: sets_dir.join(&id),
            id,
            dir,
            published: false,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hidden directory the set is written in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file of the set is written while the set is in progress.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes the manifest (whose `files` the caller filled with
    /// [`Self::list_files`], so it could check the set first), fsyncs
    /// everything, and renames the directory into place.
    pub fn publish(mut self, manifest: &Manifest) -> Result<PathBuf> {
        let json = serde_json::to_vec_pretty(manifest)?;
        fs::write(self.path(MANIFEST), &json).context("while writing the manifest")?;
        fs::write(
            self.path(MANIFEST_SUM),
            format!("{}  {MANIFEST}\n", sha256_hex(&json)),
        )
        .context("while writing the manifest checksum")?;
        for entry in fs::read_dir(&self.dir)? {
            File::open(entry?.path())?.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()?;
        fs::rename(&self.dir, &self.final_dir)
            .with_context(|| format!("while publishing set {}", self.id))?;
        if let Some(parent) = self.final_dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        self.published = true;
        Ok(self.final_dir.clone())
    }

    /// Every file of the set so far but the manifest, with size and SHA-256.
    pub fn list_files(&self) -> Result<Vec<FileEntry>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MANIFEST || name == MANIFEST_SUM {
                continue;
            }
            let (bytes, sha256) = file_digest(&entry.path())?;
            files.push(FileEntry {
                name,
                bytes,
                sha256,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }
}

impl Drop for WorkSet {
    /// A set that was not published is removed at once; if the process dies
    /// instead, the next run's `remove_leftovers` does it.
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A published set as `list` sees it.
#[derive(Debug)]
pub struct SetInfo {
    pub id: String,
    pub dir: PathBuf,
    /// The manifest, or why it could not be read or did not match its checksum.
    pub manifest: std::result::Result<Manifest, String>,
}

impl SetInfo {
    pub fn load(dir: &Path, id: &str) -> SetInfo {
        SetInfo {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            manifest: Manifest::load(dir).map_err(|e| format!("{e:#}")),
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(&self.manifest, Ok(m) if m.status == SetStatus::Complete)
    }

    /// `complete`, `incomplete`, or `damaged` when the manifest is unreadable or tampered.
    pub fn status(&self) -> &'static str {
        match &self.manifest {
            Ok(m) => m.status.as_str(),
            Err(_) => "damaged",
        }
    }
}
