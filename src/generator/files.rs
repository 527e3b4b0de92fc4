//! The attachment tree of a generated store, written exactly as Kopano lays
//! it out (kopano-facts.md section 3): files_v1 fan-out with plain, gzip and
//! multi-member gzip files, and content-addressed files_v2 directories.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::layout::Layout;

/// How a files_v1 instance is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Form {
    /// `<id>`, uncompressed.
    Plain,
    /// `<id>.gz`, one gzip member.
    Gzip,
    /// `<id>.gz` made of this many concatenated gzip members (Kopano < 8.3.3).
    MultiGzip(usize),
}

/// Creates every `L1 x L2` directory, as the server does at start.
pub fn create_v1_dirs(root: &Path, l1: u32, l2: u32) -> anyhow::Result<()> {
    for a in 0..l1 {
        for b in 0..l2 {
            let d = root.join(format!("{a}/{b}"));
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    Ok(())
}

/// Writes instance `id` in files_v1 layout; returns its path relative to `root`.
pub fn write_v1(
    root: &Path,
    l1: u32,
    l2: u32,
    id: u32,
    data: &[u8],
    form: V1Form,
) -> anyhow::Result<PathBuf> {
    let [plain, gz] = Layout::v1_candidates(l1, l2, id);
    let (rel, bytes) = match form {
        V1Form::Plain => (plain, data.to_vec()),
        V1Form::Gzip => (gz, gzip(data, 1)?),
        V1Form::MultiGzip(parts) => (gz, gzip(data, parts)?),
    };
    write_file(&root.join(&rel), &bytes)?;
    Ok(rel)
}

/// The files_v2 directory of some content: `<h0h1>/<h2h3>/<other 60 hex>`.
pub fn v2_dir(data: &[u8]) -> String {
    let h = hex::encode(Sha256::digest(data));
    format!("{}/{}/{}", &h[0..2], &h[2..4], &h[4..])
}

/// What writing one files_v2 instance produced, relative to the tree root.
pub struct V2Written {
    /// The directory (what `singleinstances.filename` holds).
    pub dir: String,
    /// `<dir>/content`, if this call created it (first instance with this content).
    pub new_content: Option<PathBuf>,
    /// `<dir>/holder/s<guid>i<id>`.
    pub holder: PathBuf,
}

/// Stores `data` for instance `id` in files_v2 layout: the content once per
/// distinct content, one holder file per instance.
pub fn write_v2(root: &Path, guid: &[u8], id: u32, data: &[u8]) -> anyhow::Result<V2Written> {
    let dir = v2_dir(data);
    let content = PathBuf::from(&dir).join("content");
    let new_content = if root.join(&content).exists() {
        None
    } else {
        write_file(&root.join(&content), data)?;
        Some(content)
    };
    let holder = PathBuf::from(&dir)
        .join("holder")
        .join(Layout::v2_holder_name(guid, id));
    write_file(&root.join(&holder), b"")?;
    Ok(V2Written {
        dir,
        new_content,
        holder,
    })
}

/// gzip `data` as `parts` concatenated members (at least one).
pub fn gzip(data: &[u8], parts: usize) -> anyhow::Result<Vec<u8>> {
    let parts = parts.max(1);
    let step = data.len().div_ceil(parts).max(1);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut chunks: Vec<&[u8]> = data.chunks(step).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for chunk in chunks {
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
        enc.write_all(chunk)?;
        out.extend_from_slice(&enc.finish()?);
    }
    Ok(out)
}

/// Writes a file, creating its parent directories.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn multi_member_gzip_round_trips() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&data, 3).unwrap();
        // A single-member decoder stops after the first member.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut first)
            .unwrap();
        assert!(first.len() < data.len());
        let mut all = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn v2_dir_splits_the_hash() {
        let d = v2_dir(b"");
        assert_eq!(
            d,
            "e3/b0/c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
