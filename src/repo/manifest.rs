//! The manifest of a set: what was captured, sizes, SHA-256 checksums,
//! timings, the Kopano facts found in the dump, and the attachment proof.
//! Written last; a checksum file beside it makes edits detectable.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::digest::sha256_hex;
use crate::attachments::CaptureStats;
use crate::attachments::rolling::RollingStats;
use crate::config_archive::ConfigInfo;
use crate::crossref::CrossRef;
use crate::dump::scanner::DumpFindings;
use crate::layout::Layout;
use crate::snapshot::SnapshotInfo;

pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SUM: &str = "manifest.json.sha256";
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetStatus {
    /// Everything the dump references was captured and checked.
    Complete,
    /// Published, but attachments are missing or corrupt: never "latest good".
    Incomplete,
}

impl SetStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SetStatus::Complete => "complete",
            SetStatus::Incomplete => "incomplete",
        }
    }
}

/// One file of the set directory, with its size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How long one phase of the backup took, and when it began (seconds after
/// the run began; absent in older sets). Phases may overlap: with `[backup]
/// overlap` the attachment capture begins while the dump still runs, so the
/// phases' seconds add up to more than the run's duration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_s: Option<f64>,
}

impl Phase {
    /// The phase began `started_s` seconds after the run began.
    pub fn at(mut self, started_s: f64) -> Phase {
        self.started_s = Some(started_s);
        self
    }

    /// Whether this phase ran (partly) at the same time as `other`.
    pub fn overlaps(&self, other: &Phase) -> bool {
        match (self.started_s, other.started_s) {
            (Some(a), Some(b)) => a < b + other.seconds && b < a + self.seconds,
            _ => false,
        }
    }
}

/// The binary log position the dump corresponds to (`--master-data=2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: String,
    pub position: u64,
}

/// The database dump stored in the set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub database: String,
    pub server_version: String,
    /// The dump program and its flags (never credentials).
    pub command: Vec<String>,
    pub binlog: Option<BinlogPosition>,
    /// When the dump's consistent snapshot was open (first table data seen).
    pub transaction_started: Option<DateTime<Utc>>,
    /// Name of the stored, zstd-compressed dump within the set; empty for
    /// a chunked dump (see `chunk_list`).
    pub file: String,
    /// Uncompressed size and SHA-256 of the SQL text.
    pub bytes: u64,
    pub sha256: String,
    /// Size and SHA-256 of the stored (compressed) file. For a chunked dump:
    /// what its distinct chunks take in the store, shared chunks included
    /// (so not what this set added), and no checksum (each chunk is named
    /// by its own).
    pub stored_bytes: u64,
    pub stored_sha256: String,
    /// Name of the file holding every `singleinstances` row (JSON lines, zstd).
    pub references_file: String,
    /// Name of the set file listing the dump's content-defined chunks in
    /// the shared object store, in order (`repo::chunk_list`); empty for
    /// sets written before chunking, which keep `file`.
    #[serde(default)]
    pub chunk_list: String,
    /// How many chunks that list holds.
    #[serde(default)]
    pub chunk_count: u64,
    /// Chunks this backup stored (the others were in the store already),
    /// and their stored bytes: what the dump added to the repository.
    #[serde(default)]
    pub new_chunks: u64,
    #[serde(default)]
    pub new_bytes: u64,
    /// Name of the file holding every `lob` instance summary (JSON lines, zstd).
    pub lob_file: String,
    pub findings: DumpFindings,
}

/// One chunk of the dump: the object named by the SHA-256 of its
/// uncompressed bytes, and the byte range of the dump it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpChunk {
    pub sha256: String,
    pub offset: u64,
    pub size: u64,
    /// Size of the object as stored when the set was written, so a `stat`
    /// can tell a truncated one (0: not recorded).
    #[serde(default)]
    pub stored_bytes: u64,
}

/// What the set says about the Kopano server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KopanoInfo {
    /// The newest `versions` row, from the dump.
    pub version: Option<String>,
    /// `settings.attachment_storage`, from the dump (authoritative).
    pub storage_backend: Option<String>,
    /// `attachment_storage` as server.cfg says (may be `auto`).
    pub configured_storage: String,
    /// The layout the backup resolved once from the two above and proved
    /// the set against; verify, restore and drill read this, never the
    /// names. Sets written before it existed get it derived at load.
    #[serde(default)]
    pub layout: Option<Layout>,
    pub attachment_path: PathBuf,
    pub config_dir: PathBuf,
    pub server_cfg: PathBuf,
}

impl KopanoInfo {
    /// For a set written before the manifest carried the typed layout: the
    /// one its backup resolved, by the same rule, from the names it kept.
    /// `None` stays when they name no layout backup could have used.
    fn derive_layout(&mut self) {
        if self.layout.is_none() {
            // Sets from before the typed layout predate s3 support: no
            // backup of theirs was of an s3 store.
            self.layout =
                Layout::resolve(self.storage_backend.as_deref(), &self.configured_storage)
                    .ok()
                    .filter(|l| *l != Layout::S3);
        }
    }
}

/// The attachment store in the set: where it came from, its index, the
/// completeness proof and what the capture cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachmentsInfo {
    pub source: PathBuf,
    /// Name of the index within the set (JSON lines, zstd).
    pub index_file: String,
    /// The set whose index supplied checksums of unchanged files, if any.
    #[serde(default)]
    pub previous_set: Option<String>,
    #[serde(flatten)]
    pub proof: CrossRef,
    pub capture: CaptureStats,
    /// What this backup's rolling verification re-read and found.
    #[serde(default)]
    pub rolling: Option<RollingStats>,
    /// For an `s3` store: the bucket the objects came from (the index's
    /// paths are its keys). Never credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// Where the objects of an `s3` store were listed and read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Source {
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    /// As configured (may be empty: requests then sign as `us-east-1`).
    pub region: String,
    pub bucket: String,
    /// The listing prefix: `attachment_path` + `/`, as configured (with
    /// the default path it begins with `/`). Instance `id` is the key
    /// `prefix + id`, or that without its leading `/`.
    pub prefix: String,
    pub path_style: bool,
    /// Whether the objects were read from the versioned view at the
    /// dump's transaction start (the index's `version_id`s), rather than
    /// as listed after the dump.
    pub versioning: bool,
    /// The moment of that view: the dump's transaction start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool_version: String,
    pub host: String,
    pub set: String,
    pub tag: Option<String>,
    pub status: SetStatus,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub phases: Vec<Phase>,
    pub kopano: KopanoInfo,
    pub database: DatabaseInfo,
    #[serde(default)]
    pub attachments: AttachmentsInfo,
    #[serde(default)]
    pub config: ConfigInfo,
    /// The filesystem snapshot the attachments were read from, and the
    /// consistency window between the dump's transaction and it.
    #[serde(default)]
    pub snapshot: Option<SnapshotInfo>,
    /// Warnings a human should read (e.g. a storage backend conflict).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Every file of the set except the manifest and its checksum.
    pub files: Vec<FileEntry>,
    /// Set by `upgrade prepare`: whether the services were stopped for this
    /// backup, and which (absent in every other set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeMark>,
}

/// How the services stood while an `upgrade prepare` backup ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeMark {
    /// `false`: a hot backup (`--keep-running`), services up.
    pub services_stopped: bool,
    /// What `prepare` stopped, in stop order.
    pub stopped: Vec<String>,
}

impl Manifest {
    /// Reads the manifest of the set in `dir`, checking it against its checksum file.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let (json, mismatch) = Self::read(dir)?;
        if let Some(why) = mismatch {
            bail!(why);
        }
        Self::parse(dir, &json)
    }

    /// For `verify`: the manifest even when it does not match its checksum
    /// file, together with that finding, so the rest can still be checked.
    pub fn load_suspect(dir: &Path) -> Result<(Manifest, Option<String>)> {
        let (json, mismatch) = Self::read(dir)?;
        Ok((Self::parse(dir, &json)?, mismatch))
    }

    /// The manifest's bytes, and why they do not match the checksum file, if they do not.
    fn read(dir: &Path) -> Result<(Vec<u8>, Option<String>)> {
        let path = dir.join(MANIFEST);
        let json = fs::read(&path).with_context(|| format!("while reading {}", path.display()))?;
        let sum_path = dir.join(MANIFEST_SUM);
        let sum = match fs::read_to_string(&sum_path) {
            Ok(sum) => sum,
            Err(e) => {
                let why = format!("cannot read {}: {e}", sum_path.display());
                return Ok((json, Some(why)));
            }
        };
        let expected = sum.split_whitespace().next().unwrap_or_default();
        let mismatch = (expected != sha256_hex(&json)).then(|| {
            format!(
                "manifest checksum mismatch in {}: the manifest was modified or damaged",
                dir.display()
            )
        });
        Ok((json, mismatch))
    }

    fn parse(dir: &Path, json: &[u8]) -> Result<Manifest> {
        let mut manifest: Manifest = serde_json::from_slice(json)
            .with_context(|| format!("while parsing {}", dir.join(MANIFEST).display()))?;
        manifest.kopano.derive_layout();
        Ok(manifest)
    }

    /// Total bytes of the set's own files (not shared objects).
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// What the set added to the repository: its own files, the dump
    /// chunks and attachment objects it was the first to store.
    pub fn added_bytes(&self) -> u64 {
        self.stored_bytes() + self.database.new_bytes + self.attachments.capture.written_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `kopano` section as the release before the typed layout wrote it.
    fn old_section(backend: Option<&str>, configured: &str) -> KopanoInfo {
        let json = serde_json::json!({
            "version": "8.7.0.0-0",
            "storage_backend": backend,
            "configured_storage": configured,
            "attachment_path": "/var/lib/kopano/attachments",
            "config_dir": "/etc/kopano",
            "server_cfg": "/etc/kopano/server.cfg",
        });
        let mut info: KopanoInfo = serde_json::from_value(json).unwrap();
        info.derive_layout();
        info
    }

    #[test]
    fn an_old_manifest_gets_the_layout_its_backup_resolved() {
        let layout = |b, c| old_section(b, c).layout;
        assert_eq!(
            layout(Some("files_v1-16-32"), "auto"),
            Some(Layout::FilesV1 { l1: 16, l2: 32 })
        );
        // No `attachment_storage` row (older Kopano): server.cfg decides.
        assert_eq!(
            layout(None, "files"),
            Some(Layout::FilesV1 { l1: 10, l2: 20 })
        );
        assert_eq!(layout(None, "auto"), Some(Layout::FilesV2));
        // Nothing a backup could have used: none, and restorable says so.
        assert_eq!(layout(None, "s3"), None);
        assert_eq!(layout(None, "nonsense"), None);
    }

    #[test]
    fn a_typed_layout_is_read_as_written_not_derived() {
        let mut info = old_section(Some("files"), "files");
        info.layout = Some(Layout::Database);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["layout"], "database");
        let mut back: KopanoInfo = serde_json::from_value(json).unwrap();
        back.derive_layout();
        assert_eq!(back.layout, Some(Layout::Database));
    }
}
