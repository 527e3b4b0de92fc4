//! Measures the dump pipeline's compressor choice: the `zstd` crate's
//! multi-threaded encoder on a blocking thread against tokio +
//! async-compression's zstd encoder, level 3, same worker count, same input.
//!
//! Usage: cargo run --release --example zstd_compare -- FILE

use std::io::{Read, Write};
use std::time::Instant;

use async_compression::Level;
use async_compression::tokio::write::ZstdEncoder;
use async_compression::zstd::CParameter;
use tokio::io::AsyncWriteExt;

/// Counts bytes written, discards them.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn blocking_zstd(path: &str) -> anyhow::Result<(u64, u64, f64)> {
    let start = Instant::now();
    let mut input = std::fs::File::open(path)?;
    let mut enc = zstd::Encoder::new(Counter::default(), 3)?;
    enc.multithread(workers())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        enc.write_all(&buf[..n])?;
    }
    let out = enc.finish()?;
    Ok((read, out.0, start.elapsed().as_secs_f64()))
}

async fn async_zstd(path: &str) -> anyhow::Result<(u64, u64, f64)> {
    let start = Instant::now();
    let mut input = tokio::fs::File::open(path).await?;
    let mut enc = ZstdEncoder::with_quality_and_params(
        Vec::<u8>::new(),
        Level::Precise(3),
        &[CParameter::nb_workers(workers())],
    );
    let mut total_out = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut input, &mut buf).await?;
        if n == 0 {
            break;
        }
        read += n as u64;
        enc.write_all(&buf[..n]).await?;
        // Drain what was produced so memory stays flat, like a file sink.
        total_out += enc.get_ref().len() as u64;
        enc.get_mut().clear();
    }
    enc.shutdown().await?;
    total_out += enc.get_ref().len() as u64;
    Ok((read, total_out, start.elapsed().as_secs_f64()))
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: zstd_compare FILE"))?;
    let (inb, outb, secs) = blocking_zstd(&path)?;
    println!(
        "zstd crate, multithread({}), blocking: {:.0} MB/s, {} -> {} bytes",
        workers(),
        inb as f64 / secs / 1e6,
        inb,
        outb
    );
    let rt = tokio::runtime::Runtime::new()?;
    let (inb, outb, secs) = rt.block_on(async_zstd(&path))?;
    println!(
        "async-compression zstd, nb_workers({}), tokio: {:.0} MB/s, {} -> {} bytes",
        workers(),
        inb as f64 / secs / 1e6,
        inb,
        outb
    );
    Ok(())
}
