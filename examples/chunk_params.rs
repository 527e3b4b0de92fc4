//! Measurement that chose the dump's chunker parameters (README "Dump
//! chunks"): a generated store is dumped, one night is simulated on it in
//! real SQL (read flags and folder moves scattered through `properties` and
//! `hierarchy`, 1% new messages, 0.5% deleted and purged), it is dumped
//! again, and for several (min, avg, max) the second dump's chunks are
//! compared with the first's. Prints a table, not a verdict.
//!
//! Usage: cargo run --release --example chunk_params -- [SIZE_MB, default 200] [database|files]

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use kcbackup::dump::chunks::Chunker;
use kcbackup::generator::nightly::{Night, night};
use kcbackup::generator::{self, StoreSpec};
use kcbackup::layout::Layout;
use kcbackup::mysql::ClientDefaults;
use kcbackup::repo::config::ChunkerParams;
use kcbackup::repo::digest::sha256_hex;
use kcbackup::repo::manifest::DumpChunk;
use kcbackup::sandbox::{Sandbox, SandboxOptions};

const CANDIDATES: &[(u32, u32, u32)] = &[
    (4 << 10, 16 << 10, 64 << 10),
    (8 << 10, 32 << 10, 128 << 10),
    (16 << 10, 64 << 10, 256 << 10),
    (32 << 10, 128 << 10, 512 << 10),
    (64 << 10, 256 << 10, 1 << 20),
    (128 << 10, 512 << 10, 2 << 20),
    (256 << 10, 1 << 20, 4 << 20),
];

fn dump(defaults: &ClientDefaults, database: &str, to: &Path) -> Result<Vec<u8>> {
    let out = fs::File::create(to)?;
    let status = Command::new("mariadb-dump")
        .arg(defaults.arg())
        .args(kcbackup::dump::DUMP_FLAGS)
        .arg(database)
        .stdout(Stdio::from(out))
        .status()?;
    ensure!(status.success(), "mariadb-dump failed");
    Ok(fs::read(to)?)
}

/// The chunks of `data` with their SHA-256, and the seconds the cutting took.
fn chunk(data: &[u8], params: &ChunkerParams) -> Result<(Vec<DumpChunk>, f64)> {
    let mut cuts = Vec::new();
    let t = Instant::now();
    let mut chunker = Chunker::new(params)?;
    // Fed as the dump's pipe delivers it.
    for piece in data.chunks(1 << 20) {
        chunker.push(piece, |offset, bytes| {
            cuts.push((offset, bytes.len()));
            Ok(())
        })?;
    }
    chunker.finish(|offset, bytes| {
        cuts.push((offset, bytes.len()));
        Ok(())
    })?;
    let seconds = t.elapsed().as_secs_f64();
    let chunks = cuts
        .into_iter()
        .map(|(offset, size)| DumpChunk {
            sha256: sha256_hex(&data[offset as usize..offset as usize + size]),
            offset,
            size: size as u64,
            stored_bytes: 0,
        })
        .collect();
    Ok((chunks, seconds))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let size_mb: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let layout = match args.next().as_deref() {
        None | Some("database") => Layout::Database,
        Some("files") => Layout::FilesV1 { l1: 10, l2: 20 },
        Some(other) => anyhow::bail!("layout {other:?}: database or files"),
    };
    let dir = tempfile::Builder::new().prefix("kcchunks-").tempdir()?;
    let sandbox = Sandbox::start(&SandboxOptions::default())?;
    // Database layout: attachment data goes into `lob` as hex, so the dump
    // is about twice the data. Files layout: the dump is the mail's text.
    let mut spec = StoreSpec::sized(layout, "kopano", size_mb * 1_000_000 / 2);
    if layout != Layout::Database {
        spec.body_bytes = 20_000;
        spec.attachment_bytes = 2_000;
        spec.messages_per_user = (size_mb * 1_000_000 / 24_000 / spec.users as u64) as u32;
    }
    let t = Instant::now();
    let mut store = generator::generate(&sandbox, &dir.path().join("store"), &spec)?;
    println!("generated store in {:.1}s", t.elapsed().as_secs_f64());
    // Delivered mail carries its flags, so a night flips them in place.
    generator::nightly::add_message_flags(&sandbox, &mut store)?;
    let defaults = ClientDefaults::write(&store.kopano_target())?;
    let first = dump(&defaults, &store.database, &dir.path().join("first.sql"))?;
    let n = Night::default();
    let messages = night(&sandbox, &mut store, &n).context("simulating the night")?;
    let second = dump(&defaults, &store.database, &dir.path().join("second.sql"))?;
    println!(
        "layout {layout}; dump {:.1} MB, after the night {:.1} MB; {messages} messages; \
         night: {}% read flags, {}% moved, {}% new, {}% deleted",
        first.len() as f64 / 1e6,
        second.len() as f64 / 1e6,
        n.read_percent,
        n.moved_percent,
        n.new_percent,
        n.deleted_percent
    );
    println!(
        "| min | avg | max | chunks | new chunks | new % | new MB (zstd) | on 4K blocks | \
         new % of dump (zstd) | first dump MB (zstd) | on 4K blocks | manifest KB | cut MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let whole_zstd = zstd::bulk::compress(&second, 3)?.len() as f64;
    println!(
        "whole second dump, one zstd stream: {:.1} MB",
        whole_zstd / 1e6
    );
    for &(min, avg, max) in CANDIDATES {
        let params = ChunkerParams {
            min_size: min,
            avg_size: avg,
            max_size: max,
        };
        let (old, _) = chunk(&first, &params)?;
        let (mut first_zstd, mut first_blocks) = (0u64, 0u64);
        let mut distinct = HashSet::new();
        for c in &old {
            if distinct.insert(c.sha256.as_str()) {
                let n = zstd::bulk::compress(
                    &first[c.offset as usize..(c.offset + c.size) as usize],
                    3,
                )?
                .len() as u64;
                first_zstd += n;
                first_blocks += n.div_ceil(4096) * 4096;
            }
        }
        let (new, seconds) = chunk(&second, &params)?;
        let known: HashSet<&str> = old.iter().map(|c| c.sha256.as_str()).collect();
        let mut seen = HashSet::new();
        let (mut fresh, mut fresh_zstd, mut fresh_blocks) = (0u64, 0u64, 0u64);
        for c in &new {
            if known.contains(c.sha256.as_str()) || !seen.insert(c.sha256.as_str()) {
                continue;
            }
            fresh += 1;
            let bytes = &second[c.offset as usize..(c.offset + c.size) as usize];
            let n = zstd::bulk::compress(bytes, 3)?.len() as u64;
            fresh_zstd += n;
            fresh_blocks += n.div_ceil(4096) * 4096;
        }
        let manifest = serde_json::to_vec_pretty(&new)?.len();
        println!(
            "| {} KiB | {} KiB | {} KiB | {} | {fresh} | {:.1}% | {:.2} | {:.2} | {:.1}% | {:.1} | {:.1} | {} | {:.0} |",
            min >> 10,
            avg >> 10,
            max >> 10,
            new.len(),
            fresh as f64 * 100.0 / new.len() as f64,
            fresh_zstd as f64 / 1e6,
            fresh_blocks as f64 / 1e6,
            fresh_zstd as f64 * 100.0 / whole_zstd,
            first_zstd as f64 / 1e6,
            first_blocks as f64 / 1e6,
            manifest / 1024,
            second.len() as f64 / 1e6 / seconds,
        );
    }
    Ok(())
}
