//! What a set contains: the names of its files, and every object of the
//! shared store it references (attachment objects and dump chunks). Garbage
//! collection, verify and copying between repositories all ask here.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::chunk_list;
use super::manifest::Manifest;
use super::objects::Encoding;
use crate::attachments::read_index;

/// File names inside a set written by this release.
pub const DUMP_FILE: &str = "db.sql.zst";
/// The dump's ordered chunk list (`repo::chunk_list`).
pub const CHUNK_LIST_FILE: &str = "dump.chunks.jsonl.zst";
pub const REFERENCES_FILE: &str = "singleinstances.jsonl.zst";
pub const LOB_FILE: &str = "lob.jsonl.zst";
pub const ATTACHMENTS_FILE: &str = "attachments.jsonl.zst";
pub const CONFIG_FILE: &str = "config.tar.zst";

/// Every object the set in `dir` references, by SHA-256, with the encoding
/// it was stored in when the set recorded one. An index or chunk list that
/// cannot be read is an error: a caller deleting objects must not guess
/// what a set needs.
pub fn referenced_objects(dir: &Path, manifest: &Manifest) -> Result<BTreeMap<String, Encoding>> {
    let mut objects = BTreeMap::new();
    let db = &manifest.database;
    if db.chunk_list.is_empty() && db.file.is_empty() {
        // Neither a single-file dump nor a chunk list (an early chunked set
        // kept its chunks inline): what it needs is unknown.
        bail!(
            "set {} names neither a dump file nor a chunk list, so the objects it needs are              unknown",
            manifest.set
        );
    }
    let chunks = chunk_list::open(dir, manifest)
        .with_context(|| format!("while reading the dump's chunk list in {}", dir.display()))?;
    for chunk in chunks {
        objects.insert(chunk?.sha256, Encoding::Zst);
    }
    let name = &manifest.attachments.index_file;
    if !name.is_empty() && manifest.files.iter().any(|f| &f.name == name) {
        let path = dir.join(name);
        let index = read_index(&path)?;
        for entry in index {
            let entry = entry.with_context(|| format!("while reading {}", path.display()))?;
            if let Some(sha) = entry.sha256 {
                objects.insert(sha, entry.stored.unwrap_or(Encoding::Raw));
            }
        }
    }
    Ok(objects)
}
