//! The per-row findings of the dump scan, stored in the set as zstd JSON
//! lines: every `singleinstances` row and every `lob` instance summary.
//! They can be millions of rows, so they go to disk, never into memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use super::scanner::{LobInstance, ScanSink, SingleInstanceRow};

/// A [`ScanSink`] that writes both files.
pub struct RefsWriter {
    singleinstances: zstd::Encoder<'static, BufWriter<File>>,
    lob: zstd::Encoder<'static, BufWriter<File>>,
}

/// A zstd JSON-lines file being written (also used for the attachment index).
pub(crate) fn encoder(path: &Path) -> Result<zstd::Encoder<'static, BufWriter<File>>> {
    let file = File::create(path).with_context(|| format!("while creating {}", path.display()))?;
    Ok(zstd::Encoder::new(BufWriter::new(file), 3)?)
}

impl RefsWriter {
    pub fn create(singleinstances: &Path, lob: &Path) -> Result<RefsWriter> {
        Ok(RefsWriter {
            singleinstances: encoder(singleinstances)?,
            lob: encoder(lob)?,
        })
    }

    /// Completes both zstd streams and flushes the files.
    pub fn finish(self) -> Result<()> {
        self.singleinstances.finish()?.flush()?;
        self.lob.finish()?.flush()?;
        Ok(())
    }
}

impl ScanSink for RefsWriter {
    fn singleinstance(&mut self, row: SingleInstanceRow) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.singleinstances, &row)?;
        self.singleinstances.write_all(b"\n")
    }

    fn lob_instance(&mut self, lob: LobInstance) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.lob, &lob)?;
        self.lob.write_all(b"\n")
    }
}

/// Reads one of the files back, row by row.
pub fn read_rows<T: DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<T>> + use<T>> {
    let file = File::open(path).with_context(|| format!("while opening {}", path.display()))?;
    let reader = BufReader::new(zstd::Decoder::new(file)?);
    let shown = path.display().to_string();
    Ok(reader.lines().map(move |line| {
        let line = line.with_context(|| format!("while reading {shown}"))?;
        serde_json::from_str(&line).with_context(|| format!("while parsing a row of {shown}"))
    }))
}
