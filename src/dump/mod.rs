//! Running the dump command and streaming its output once through a
//! SHA-256 hasher, the content-defined [`chunks`] stored in the object store
//! and the SQL [`scanner`]. The dump only counts when the command exited 0
//! AND its completion trailer was seen.

pub mod chunks;
pub mod reader;
pub mod refs;
pub mod scanner;
pub mod sql_lexer;

use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use crate::cancel::Cancel;
use crate::mysql::{Client, dump_program};
use crate::progress::Progress;
use crate::repo::ObjectStore;
use crate::repo::chunk_list::ChunkListWriter;
use crate::repo::config::ChunkerParams;
use crate::repo::digest::HashWriter;
use crate::repo::manifest::BinlogPosition;
use crate::settings::MysqlTarget;
use crate::watchdog::Watchdog;
pub use chunks::Reuse;
use chunks::{ChunkPool, Chunker};
use refs::RefsWriter;
use scanner::{DumpFindings, Scanner};

/// Flags for a consistent, complete, binary-safe dump of InnoDB tables.
pub const DUMP_FLAGS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--default-character-set=utf8mb4",
];

const CHUNK: usize = 1 << 20;
/// How much of the dump's start is searched for the binlog position.
const HEAD: usize = 1 << 20;
/// The first table's header: the dump's transaction is open by then.
const TABLE_MARK: &[u8] = b"-- Table structure for table";

/// Where the dump's per-row findings and its ordered chunk list go (the
/// dump itself goes into the object store as chunks).
pub struct DumpFiles<'a> {
    pub singleinstances: &'a Path,
    pub lob: &'a Path,
    pub chunk_list: &'a Path,
}

/// What the dump produced.
#[derive(Debug, Clone)]
pub struct DumpReport {
    pub program: PathBuf,
    /// Program name and flags, no credentials.
    pub command: Vec<String>,
    pub server_version: String,
    pub binlog: Option<BinlogPosition>,
    pub transaction_started: Option<DateTime<Utc>>,
    pub bytes: u64,
    pub sha256: String,
    /// How many chunks the dump was cut into (their list is in
    /// `DumpFiles::chunk_list`), and what they take in the store (shared
    /// chunks included, each distinct chunk once).
    pub chunks: u64,
    pub stored_bytes: u64,
    /// Chunks, and their stored bytes, this dump added to the store.
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Stored chunks rolling verification found corrupt and wrote again.
    pub rewritten_chunks: Vec<String>,
    pub findings: DumpFindings,
    pub seconds: f64,
}

/// Checks the connection, then runs the dump: cut into chunks with `params`
/// into `store` (committed, not synced: the caller syncs the store before a
/// manifest names them; `reuse`: what may be taken from the store unread,
/// see [`Reuse`]), its findings into `files`. `on_transaction_open`
/// is called once, from the streaming loop, as soon as table data begins;
/// `Break` stops the dump at once (the caller knows why). `cancel` raised
/// stops it at its next read (work running alongside it failed).
#[allow(clippy::too_many_arguments)]
pub fn run(
    target: &MysqlTarget,
    files: &DumpFiles<'_>,
    store: &ObjectStore,
    params: &ChunkerParams,
    reuse: &Reuse,
    progress: &dyn Progress,
    cancel: &Cancel,
    mut on_transaction_open: impl FnMut(DateTime<Utc>) -> ControlFlow<()>,
) -> Result<DumpReport> {
    let started = Instant::now();
    let mut chunker = Chunker::new(params).context("in the repository's chunker parameters")?;
    let client = Client::new(target)?;
    let server_version = client
        .query_value("SELECT VERSION()")
        .context("while connecting to the database server")?
        .unwrap_or_default();
    let binlog_on = client.query_value("SELECT @@log_bin")?.as_deref() == Some("1");

    let program = dump_program(target)?;
    let mut flags: Vec<String> = DUMP_FLAGS.iter().map(|s| s.to_string()).collect();
    if binlog_on {
        flags.push(binlog_flag(&program));
    }
    let mut child = Command::new(&program)
        .arg(client.defaults().arg())
        .args(&flags)
        // No --databases: the dump must not carry CREATE DATABASE/USE, so it
        // restores into whatever database the restore names.
        .arg("--")
        .arg(&target.database)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that all of a wrapper script's processes
        // can be stopped together: a pipeline child left running would keep
        // the output pipe open and the read below blocked.
        .process_group(0)
        .spawn()
        .with_context(|| format!("while starting {}", program.display()))?;
    // A signal terminates the dump, so the read below returns and cleanup runs.
    let terminate = crate::signals::terminate_group_on_signal(child.id());
    let mut stdout = child.stdout.take().context("dump command has no stdout")?;
    let stderr = child.stderr.take().context("dump command has no stderr")?;
    // Drained on its own thread so a chatty dump cannot block on a full pipe.
    let stderr_thread = thread::spawn(move || read_tail(stderr, 64 * 1024));

    let sink = RefsWriter::create(files.singleinstances, files.lob)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(8);
    let scan_thread = thread::spawn(move || -> Result<(DumpFindings, RefsWriter)> {
        let mut scanner = Scanner::new(sink);
        for chunk in rx {
            scanner.feed(&chunk)?;
        }
        Ok(scanner.finish()?)
    });

    let mut plain = HashWriter::new(std::io::sink());
    let mut head: Vec<u8> = Vec::new();
    let mut transaction_started = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut scanner_stopped = false;
    progress.start("dump", None);
    // A hung server sends nothing and closes nothing: without output for
    // the stall limit, the dump's process group is killed, which ends the
    // read below, and the run fails instead of holding the lock forever.
    let dog = Watchdog::new(target.timeouts.stall);
    let pgid = child.id();
    let stream_result = thread::scope(|scope| {
        scope.spawn(|| dog.watch(|| crate::signals::kill_group(pgid)));
        let mut pool = ChunkPool::start(scope, store, reuse, chunk_workers());
        let result = (|| -> Result<()> {
            loop {
                crate::signals::check()?;
                cancel.check()?;
                // Only the wait for the dump counts, not our own work
                // (writing, the snapshot) between reads.
                dog.touch();
                let mut buf = vec![0u8; CHUNK];
                let n = stdout
                    .read(&mut buf)
                    .context("while reading the dump's output")?;
                dog.pause();
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if transaction_started.is_none() && contains_across(&tail, &buf, TABLE_MARK) {
                    let now = Utc::now();
                    transaction_started = Some(now);
                    if on_transaction_open(now).is_break() {
                        bail!("the dump was stopped as its transaction began");
                    }
                }
                if transaction_started.is_none() {
                    tail = buf[buf.len().saturating_sub(TABLE_MARK.len())..].to_vec();
                }
                if head.len() < HEAD {
                    head.extend_from_slice(&buf[..n.min(HEAD - head.len())]);
                }
                plain.write_all(&buf)?;
                chunker.push(&buf, |offset, data| pool.send(offset, data))?;
                progress.inc(n as u64);
                if tx.send(buf).is_err() {
                    scanner_stopped = true;
                    bail!("the dump scanner stopped early");
                }
            }
        })();
        dog.stop();
        // The chunks are only finished for a dump that read to its end; on
        // any other way out the pool's workers stop with the queue.
        result.and_then(|()| {
            chunker.finish(|offset, data| pool.send(offset, data))?;
            pool.finish()
        })
    });
    let stream_result = if dog.fired() {
        Err(anyhow!(
            "the dump produced no output for {} s (timeout [mysql] stall_timeout_s) and was \
             stopped; the database server may be hung",
            target.timeouts.stall.as_secs()
        ))
    } else {
        stream_result
    };
    drop(tx);
    progress.finish();
    if stream_result.is_err() {
        // Stop the dump (all of its process group) so it does not block
        // forever on a pipe nobody reads.
        crate::signals::kill_group(child.id());
        let _ = child.kill();
    }
    let status = child.wait().context("while waiting for the dump command")?;
    drop(terminate);
    let stderr_text = stderr_thread.join().unwrap_or_default();
    let scanned = scan_thread
        .join()
        .map_err(|_| anyhow!("the dump scanner panicked"))?;
    let stored = match stream_result {
        Ok(stored) => stored,
        Err(e) => {
            // The scanner's own error says more than "it stopped early"; any
            // other stop leaves the scanner with a cut-off dump, whose complaint
            // about that would hide the real cause.
            return Err(match scanned {
                Err(scanner_error) if scanner_stopped => scanner_error,
                _ => e,
            });
        }
    };

    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            // kcbackup passed its own signal on: the interruption says why.
            (None, Some(_)) if crate::signals::received().is_some() => "was stopped".to_string(),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(name) => format!("was killed by signal {sig} ({name})"),
                Err(_) => format!("was killed by signal {sig}"),
            },
            _ => "failed".to_string(),
        };
        let said = match stderr_text.trim() {
            "" => String::new(),
            text => format!(": {text}"),
        };
        bail!("the dump command {} {how}{said}", program.display());
    }
    let (findings, sink) = scanned.context("while scanning the dump")?;
    sink.finish()
        .context("while writing the dump's reference lists")?;
    if !findings.trailer_seen {
        bail!(
            "the dump ended without its `-- Dump completed` trailer: it is truncated{}",
            if stderr_text.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", stderr_text.trim())
            }
        );
    }
    let (_, bytes, sha256) = plain.finish();
    // Written once the pool has the stored size of every chunk (known only
    // as each worker commits), from its in-memory list, in dump order.
    let mut list = ChunkListWriter::create(files.chunk_list)?;
    for chunk in &stored.chunks {
        list.push(chunk)?;
    }
    let chunk_count = list.finish()?;

    let mut command = vec![
        program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    ];
    command.extend(flags);
    command.push(target.database.clone());
    Ok(DumpReport {
        program,
        command,
        server_version,
        binlog: parse_binlog(&head),
        transaction_started,
        bytes,
        sha256,
        chunks: chunk_count,
        stored_bytes: stored.stored_bytes,
        rewritten_chunks: stored.rewritten,
        new_chunks: stored.new_chunks,
        new_bytes: stored.new_bytes,
        findings,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `--source-data=2` for dump programs that renamed it, `--master-data=2` otherwise.
fn binlog_flag(program: &Path) -> String {
    let help = duct::cmd(program, ["--help"])
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .read()
        .unwrap_or_default();
    if help.contains("--source-data") {
        "--source-data=2".into()
    } else {
        "--master-data=2".into()
    }
}

/// Finds `needle` in `tail ++ buf` without copying `buf`.
fn contains_across(tail: &[u8], buf: &[u8], needle: &[u8]) -> bool {
    let edge: Vec<u8> = tail
        .iter()
        .chain(buf.iter().take(needle.len()))
        .copied()
        .collect();
    edge.windows(needle.len()).any(|w| w == needle)
        || buf.windows(needle.len()).any(|w| w == needle)
}

/// Parses `CHANGE MASTER TO MASTER_LOG_FILE='f', MASTER_LOG_POS=n` (or SOURCE_).
fn parse_binlog(head: &[u8]) -> Option<BinlogPosition> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().find(|l| l.contains("_LOG_FILE='"))?;
    let file = line.split("_LOG_FILE='").nth(1)?.split('\'').next()?;
    let position = line.split("_LOG_POS=").nth(1)?;
    let position = position.trim_end_matches(';').trim().parse().ok()?;
    Some(BinlogPosition {
        file: file.to_string(),
        position,
    })
}

/// Reads a stream to its end, keeping only its last `keep` bytes.
fn read_tail(mut r: impl Read, keep: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Compressing workers: one per core. The reading thread mostly waits on
/// the dump's pipe, so the cores are the workers'.
fn chunk_workers() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_position_is_read_from_the_header_comment() {
        let head = b"-- MySQL dump\n--\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1234;\n";
        assert_eq!(
            parse_binlog(head),
            Some(BinlogPosition {
                file: "mysql-bin.000003".into(),
                position: 1234
            })
        );
        assert_eq!(parse_binlog(b"-- no position here\n"), None);
    }

    #[test]
    fn marker_is_found_across_chunk_edges() {
        let whole = b"xx-- Table structure for table `a`";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let tail = &a[a.len().saturating_sub(TABLE_MARK.len())..];
            assert!(
                contains_across(tail, b, TABLE_MARK) || contains_across(b"", a, TABLE_MARK),
                "cut at {cut}"
            );
        }
        assert!(!contains_across(b"-- Table struct", b"ure", TABLE_MARK));
    }
}
