//! The repository's `config` file: which format the repository is in, its
//! id, who created it, and the chunker parameters every set's dump chunks
//! are cut with (changing them would stop new dumps deduplicating against
//! old ones, so they are fixed when the repository is created).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Repository format: 1 is the layout before `config` existed (sets with
/// one compressed dump file); 2 adds `config` and chunked dumps.
pub const REPO_FORMAT: u32 = 2;

/// FastCDC sizes in bytes for the dump's content-defined chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// Chosen by measurement (issue 9; README "Dump chunks";
    /// `cargo run --release --example chunk_params`): after a night that
    /// touched ~4.5% of the messages of a 174 MB dump, 32 KiB chunks store
    /// about a fifth of it again (64 KiB: a third, 256 KiB: four fifths),
    /// while keeping the chunk list and the object count per dump modest.
    fn default() -> Self {
        ChunkerParams {
            min_size: 8 * 1024,
            avg_size: 32 * 1024,
            max_size: 128 * 1024,
        }
    }
}

/// The contents of `<repository>/config` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random, hex; tells repositories apart (copies keep their own).
    pub id: String,
    /// `kcbackup <version>` that created the repository.
    pub created_by: String,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
}
