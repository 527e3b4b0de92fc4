//! A streaming scanner for mysqldump/mariadb-dump output: it reads the SQL
//! text once, chunk by chunk, and records what the backup must prove from
//! the dump itself (row counts, attachment references, storage backend,
//! Kopano version, `lob` chunk totals). Memory stays flat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One row of Kopano's `singleinstances` table: a reference to attachment data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SingleInstanceRow {
    pub instanceid: u32,
    pub hierarchyid: u32,
    pub tag: u16,
    /// files_v2: directory of the data, relative to attachment_path; else empty/NULL.
    pub filename: Option<String>,
}

/// The attachment data of one instance in the `lob` table (database backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobInstance {
    pub instanceid: u32,
    pub tag: u16,
    /// Number of chunk rows seen.
    pub chunks: u32,
    /// Sum of the chunks' data lengths in bytes.
    pub bytes: u64,
    /// True when the chunk ids were exactly 0..chunks-1 (no gap, no duplicate).
    pub gap_free: bool,
}

/// A row of the `versions` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KopanoVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    pub revision: u32,
    pub databaserevision: u32,
}

impl std::fmt::Display for KopanoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{} (database revision {})",
            self.major, self.minor, self.micro, self.revision, self.databaserevision
        )
    }
}

/// Receives the potentially large, per-row findings as they stream past, so
/// that the scanner itself never accumulates them.
pub trait ScanSink {
    fn singleinstance(&mut self, row: SingleInstanceRow) -> std::io::Result<()>;
    fn lob_instance(&mut self, lob: LobInstance) -> std::io::Result<()>;
}

/// The small findings, kept in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFindings {
    /// Every table the dump creates, with the number of rows it inserts.
    pub row_counts: BTreeMap<String, u64>,
    /// `settings.attachment_storage` as stored in the database.
    pub attachment_storage: Option<String>,
    /// `settings.server_guid`, as lower-case hex.
    pub server_guid: Option<String>,
    /// The greatest `versions` row.
    pub kopano_version: Option<KopanoVersion>,
    /// Number of `singleinstances` rows passed to the sink.
    pub singleinstance_rows: u64,
    /// Number of `lob` instances passed to the sink.
    pub lob_instances: u64,
    /// The dump ended with mysqldump's `-- Dump completed` trailer.
    pub trailer_seen: bool,
}
// STUB-BEGIN
pub struct Scanner<S: ScanSink> {
    sink: S,
}
impl<S: ScanSink> Scanner<S> {
    pub fn new(sink: S) -> Self {
        Scanner { sink }
    }
    pub fn feed(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    pub fn finish(self) -> std::io::Result<(DumpFindings, S)> {
        Ok((DumpFindings::default(), self.sink))
    }
}
// STUB-END
