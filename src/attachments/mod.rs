//! Capturing the attachment store: a sorted walk of a source tree whose new
//! or changed files go into the shared object store, with a per-set index
//! of every entry. Unchanged files (same path, size, mtime as in the
//! previous complete set) are not read again.

pub mod capture;
pub mod index;
pub mod rolling;
pub mod s3;

use serde::{Deserialize, Serialize};

pub use capture::{CaptureOptions, capture};
pub use index::{EntryKind, IndexEntry, IndexWriter, read_index};

/// How many paths a list in the stats keeps (the counts are always exact).
pub const MAX_LISTED: usize = 100;

/// What one capture did, for the manifest and `backup --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// The source root did not exist: nothing was captured.
    #[serde(default)]
    pub source_missing: bool,
    /// Regular files in the index, and their total size.
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sockets, fifos, devices (recorded, not read).
    pub other: u64,
    /// Files read and hashed in this run.
    pub read_files: u64,
    pub read_bytes: u64,
    /// Files whose checksum was taken from the previous set, not read.
    pub reused: u64,
    pub reused_bytes: u64,
    /// Objects added to the repository, and their stored size.
    pub new_objects: u64,
    pub written_bytes: u64,
    /// Unchanged files whose earlier object was missing or not of its
    /// recorded stored size: read again instead of reused.
    #[serde(default)]
    pub reuse_refused: u64,
    /// Stored objects found corrupt during capture (their content no longer
    /// hashes to their name), moved to `objects/.corrupt/` and replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt_objects: Vec<String>,
    /// Listed by their directory, gone when opened (not an error by itself).
    pub vanished: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vanished_paths: Vec<String>,
    /// Changed under the reader on every try: not in the index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstable_paths: Vec<String>,
    /// Could not be read or have unusable names: not in the index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Symlinks to directories outside the tree that were followed and
    /// captured as if in place (`path -> target`).
    #[serde(default)]
    pub followed_dirs: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed: Vec<String>,
    /// Those of them on another filesystem than the attachment directory:
    /// a snapshot of it does not cover them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed_other_device: Vec<String>,
    /// Symlinks recorded as links (`path -> target`, dangling ones marked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_paths: Vec<String>,
    /// Directory links not followed because they lead into a loop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_followed: Vec<String>,
    /// FIFOs, sockets and devices: recorded, never opened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub special_paths: Vec<String>,
    pub seconds: f64,
}

/// Appends to a capped list.
pub(crate) fn note(list: &mut Vec<String>, item: String) {
    if list.len() < MAX_LISTED {
        list.push(item);
    }
}
