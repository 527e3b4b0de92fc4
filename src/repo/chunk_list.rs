//! The ordered list of a set's dump chunks, kept as a file of the set (JSON
//! lines, zstd) rather than in the manifest, so `list` reads small manifests
//! and every reader streams the list with memory flat in its length.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Lines, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::digest::file_digest;
use super::manifest::{DumpChunk, FileEntry, Manifest};

/// Writes the list line by line, in dump order.
pub struct ChunkListWriter {
    out: zstd::Encoder<'static, BufWriter<File>>,
    count: u64,
    path: String,
}

impl ChunkListWriter {
    pub fn create(path: &Path) -> Result<ChunkListWriter> {
        let file =
            File::create(path).with_context(|| format!("while creating {}", path.display()))?;
        let out = zstd::Encoder::new(BufWriter::new(file), 3)
            .with_context(|| format!("while creating {}", path.display()))?;
        Ok(ChunkListWriter {
            out,
            count: 0,
            path: path.display().to_string(),
        })
    }

    pub fn push(&mut self, chunk: &DumpChunk) -> Result<()> {
        serde_json::to_writer(&mut self.out, chunk)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("while writing {}", self.path))?;
        self.count += 1;
        Ok(())
    }

    /// Ends the zstd frame and flushes; returns how many chunks were written.
    pub fn finish(self) -> Result<u64> {
        let path = self.path;
        let mut file = self
            .out
            .finish()
            .with_context(|| format!("while writing {path}"))?;
        file.flush()
            .with_context(|| format!("while writing {path}"))?;
        Ok(self.count)
    }
}

/// The chunks of the set in `dir` in dump order, one item each. Opening
/// first checks the file against its entry in `manifest.files` (size and
/// SHA-256), so an edited list is refused before any of it is believed.
/// A set without a chunk list (a legacy single-file dump) yields nothing.
pub fn open(dir: &Path, manifest: &Manifest) -> Result<ChunkLines> {
    open_listed(dir, &manifest.database.chunk_list, &manifest.files)
}

fn open_listed(dir: &Path, name: &str, files: &[FileEntry]) -> Result<ChunkLines> {
    if name.is_empty() {
        return Ok(ChunkLines {
            lines: None,
            name: String::new(),
            line: 0,
        });
    }
    let Some(listed) = files.iter().find(|f| f.name == name) else {
        bail!("the chunk list {name} is not in the manifest's file list");
    };
    let path = dir.join(name);
    let (bytes, sha256) = file_digest(&path)?;
    if bytes != listed.bytes || sha256 != listed.sha256 {
        bail!(
            "the chunk list {name} is {bytes} bytes with SHA-256 {sha256}; the manifest says {} \
             bytes, {}: it was modified or damaged",
            listed.bytes,
            listed.sha256
        );
    }
    let file = File::open(&path).with_context(|| format!("while opening {}", path.display()))?;
    let decoder =
        zstd::Decoder::new(file).with_context(|| format!("while reading {}", path.display()))?;
    Ok(ChunkLines {
        lines: Some(BufReader::new(decoder).lines()),
        name: name.to_string(),
        line: 0,
    })
}

/// Every chunk of the list in memory: for tests and small tools only.
pub fn read_all(dir: &Path, manifest: &Manifest) -> Result<Vec<DumpChunk>> {
    open(dir, manifest)?.collect()
}

/// The chunks of a list, streamed; an error ends the list.
pub struct ChunkLines {
    lines: Option<Lines<BufReader<zstd::Decoder<'static, BufReader<File>>>>>,
    name: String,
    line: u64,
}

impl Iterator for ChunkLines {
    type Item = Result<DumpChunk>;

    fn next(&mut self) -> Option<Result<DumpChunk>> {
        let line = self.lines.as_mut()?.next()?;
        self.line += 1;
        let parsed = line
            .map_err(anyhow::Error::from)
            .and_then(|l| serde_json::from_str(&l).map_err(anyhow::Error::from))
            .with_context(|| format!("while reading line {} of {}", self.line, self.name));
        if parsed.is_err() {
            self.lines = None;
        }
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reads_back_in_order_and_an_edit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.chunks.jsonl.zst");
        let chunks: Vec<DumpChunk> = (0..1000u64)
            .map(|i| DumpChunk {
                sha256: format!("{i:064x}"),
                offset: i * 10,
                size: 10,
                stored_bytes: 7,
            })
            .collect();
        let mut w = ChunkListWriter::create(&path).unwrap();
        for c in &chunks {
            w.push(c).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 1000);
        let (bytes, sha256) = file_digest(&path).unwrap();
        let entry = FileEntry {
            name: "dump.chunks.jsonl.zst".into(),
            bytes,
            sha256,
        };
        let back = read_listed(dir.path(), entry.clone()).unwrap();
        assert_eq!(back, chunks);

        let mut raw = std::fs::read(&path).unwrap();
        let at = raw.len() / 2;
        raw[at] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        let e = read_listed(dir.path(), entry).unwrap_err();
        assert!(format!("{e:#}").contains("modified or damaged"), "{e:#}");
    }

    /// Reads the list through a manifest whose file list holds `entry`.
    fn read_listed(dir: &Path, entry: FileEntry) -> Result<Vec<DumpChunk>> {
        open_listed(dir, &entry.name.clone(), &[entry])?.collect()
    }
}
