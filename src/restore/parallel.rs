//! Loading a chunked dump over several `mariadb` connections at once: one
//! pass reads the dump in order (every chunk and the whole dump's checksum
//! checked, as a single-stream load does) and cuts it into per-table byte
//! ranges ([`split`](super::split)); each range goes to the next free
//! connection, which reads just those bytes back from the chunks itself.
//! So memory stays flat, and a slow table stalls only its own connection.
//!
//! Every connection first runs the dump's preamble (its session settings:
//! character set, time zone, `sql_mode`, foreign-key and unique checks off),
//! exactly as the single stream did. What is not per-table (views,
//! triggers, events, routines, the trailer) runs after every table is
//! loaded, on one more connection, in dump order. The first connection that
//! fails is the error told, naming its table; the others are killed then,
//! before their input ends (a half statement must not run).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;

use anyhow::{Result, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::database::{LoadClient, PacketGuard, Pumped, client_failed, pump, too_long_error};
use super::split::{Dest, Segment, Splitter};
use crate::dump::reader::{self, read_chunk};
use crate::error::Damaged;
use crate::mysql::Client;
use crate::repo::chunk_list::{self, ChunkLines};
use crate::repo::manifest::{DumpChunk, Manifest};
use crate::repo::objects::ObjectStore;
use crate::settings::MysqlTarget;

/// What a parallel load needs to know.
pub struct Load<'a> {
    pub set_dir: &'a Path,
    pub manifest: &'a Manifest,
    pub store: &'a ObjectStore,
    pub target: &'a MysqlTarget,
    /// The server's `max_allowed_packet`.
    pub max_packet: u64,
    /// What a load that failed half-way leaves behind.
    pub partial: &'a str,
    /// The dump, for messages.
    pub dump_name: &'a str,
}

/// Why the load stopped, first cause only.
enum Failure {
    /// A client exited non-zero while loading `what`.
    Client {
        what: String,
        status: ExitStatus,
        stderr: String,
    },
    /// Reading the chunks back for a connection failed.
    Read(io::Error),
    Other(anyhow::Error),
}

/// What the loading threads share: the first failure, and the clients to
/// kill when one fails.
struct Shared {
    stop: AtomicBool,
    /// Clients started.
    started: AtomicUsize,
    pids: Mutex<Vec<u32>>,
    failure: Mutex<Option<Failure>>,
}

impl Shared {
    /// Records `failure` unless another came first (or the load was stopped,
    /// whose victims fail only because they were killed), then stops.
    fn fail(&self, failure: Failure) {
        if let Ok(mut first) = self.failure.lock()
            && first.is_none()
            && !self.stop.load(Ordering::SeqCst)
        {
            *first = Some(failure);
        }
        self.halt();
    }

    /// Kills every client still reading its input.
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(pids) = self.pids.lock() {
            for &pid in pids.iter() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Loads the dump of `load` with up to `jobs` table connections; returns the
/// SQL bytes read and the clients it started. The database exists and is
/// empty.
pub fn load(load: &Load<'_>, jobs: usize) -> Result<(u64, usize)> {
    let client = Client::new(load.target)?;
    let shared = Shared {
        stop: AtomicBool::new(false),
        started: AtomicUsize::new(0),
        pids: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
    };
    let preamble = OnceLock::new();
    let mut sql = reader::open(load.set_dir, load.manifest, load.store)?;
    let (tx, rx) = mpsc::channel::<Segment>();
    let rx = Mutex::new(rx);
    let conn = Conns {
        load,
        client: &client,
        shared: &shared,
        preamble: &preamble,
    };
    let (copied, longest, too_long, after) = thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| conn.tables(&rx));
        }
        let router = Router {
            splitter: Some(Splitter::new()),
            tx,
            preamble: &preamble,
            after: Vec::new(),
            shared: &shared,
        };
        let mut guard = PacketGuard::new(router, load.max_packet);
        let mut copied = pump(&mut sql, &mut guard);
        if copied.is_ok() {
            guard.inner.finish();
        } else {
            // A bad chunk, a statement too long or a failed connection:
            // stop the others before their input ends.
            shared.halt();
            if guard.too_long.is_some() {
                copied = Err(Pumped::Write(io::Error::other("too long")));
            }
        }
        let (longest, too_long) = (guard.longest, guard.too_long);
        // Drops the queue's sender: idle connections see the end.
        let Router { after, .. } = guard.inner;
        (copied, longest, too_long, after)
    });
    let packet = (longest, load.max_packet);
    if let Some(line) = too_long {
        return Err(too_long_error(line, load.max_packet, load.partial));
    }
    if let Err(Pumped::Read(e)) = &copied {
        return Err(damaged_read(load, e));
    }
    if let Some(failure) = shared.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(failure_error(load, failure, packet));
    }
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(Pumped::Read(e) | Pumped::Write(e)) => {
            return Err(anyhow::Error::from(e).context(format!(
                "while loading {}: {}",
                load.dump_name, load.partial
            )));
        }
    };
    conn.after(&after);
    if let Some(failure) = shared.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(failure_error(load, failure, packet));
    }
    Ok((bytes, shared.started.load(Ordering::SeqCst)))
}

fn damaged_read(load: &Load<'_>, e: &io::Error) -> anyhow::Error {
    Damaged(format!(
        "while reading {}: {e}; the set is damaged; {}",
        load.dump_name, load.partial
    ))
    .into()
}

fn failure_error(load: &Load<'_>, failure: Failure, packet: (u64, u64)) -> anyhow::Error {
    let name = &load.target.database;
    match failure {
        Failure::Client {
            what,
            status,
            stderr,
        } => client_failed(&what, name, status, &stderr, packet, load.partial),
        Failure::Read(e) => damaged_read(load, &e),
        Failure::Other(e) => e.context(format!(
            "while loading {}: {}",
            load.dump_name, load.partial
        )),
    }
}

/// The one pass over the dump: it hands each table's range to the queue as
/// soon as the range is complete, and keeps the ranges that run after.
struct Router<'a> {
    splitter: Option<Splitter>,
    tx: Sender<Segment>,
    preamble: &'a OnceLock<u64>,
    after: Vec<(u64, u64)>,
    shared: &'a Shared,
}

impl Router<'_> {
    fn take(&mut self, seg: Segment) {
        match seg.dest {
            Dest::Preamble => {
                let _ = self.preamble.set(seg.end);
            }
            Dest::Table(_) => {
                // Fails only when every connection stopped; the stop flag
                // ends the pass then.
                let _ = self.tx.send(seg);
            }
            Dest::After => match self.after.last_mut() {
                Some(last) if last.1 == seg.start => last.1 = seg.end,
                _ => self.after.push((seg.start, seg.end)),
            },
        }
    }

    fn finish(&mut self) {
        if let Some(splitter) = self.splitter.take() {
            let mut segs = Vec::new();
            splitter.finish(&mut |seg| segs.push(seg));
            for seg in segs {
                self.take(seg);
            }
        }
        // A dump that is all preamble still has one.
        let _ = self.preamble.set(0);
    }
}

impl Write for Router<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.shared.stopped() {
            return Err(io::Error::other("a connection failed"));
        }
        let mut segs = Vec::new();
        if let Some(splitter) = self.splitter.as_mut() {
            splitter.feed(buf, &mut |seg| segs.push(seg));
        }
        for seg in segs {
            self.take(seg);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts connections and feeds them ranges of the dump.
struct Conns<'a> {
    load: &'a Load<'a>,
    client: &'a Client,
    shared: &'a Shared,
    preamble: &'a OnceLock<u64>,
}

impl Conns<'_> {
    /// One table connection: takes ranges from the queue until it ends,
    /// starting its client at the first one.
    fn tables(&self, rx: &Mutex<Receiver<Segment>>) {
        let mut conn: Option<Conn> = None;
        let mut ranges = match self.ranges() {
            Ok(r) => r,
            Err(e) => return self.shared.fail(Failure::Other(e)),
        };
        loop {
            let next = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => break,
            };
            let Ok(seg) = next else { break };
            if self.shared.stopped() {
                break;
            }
            let Dest::Table(table) = seg.dest else {
                continue;
            };
            if conn.is_none() {
                match self.start(&mut ranges) {
                    Ok(c) => conn = Some(c),
                    Err(failed) => return self.end(None, Some(failed)),
                }
            }
            let Some(c) = conn.as_mut() else { break };
            if let Err(failed) = c.send(&mut ranges, seg.start, seg.end, format!("table `{table}`"))
            {
                return self.end(conn, Some(failed));
            }
        }
        self.end(conn, None);
    }

    /// The connection for what runs after the tables: the preamble, then
    /// `after`'s ranges in dump order.
    fn after(&self, after: &[(u64, u64)]) {
        let mut ranges = match self.ranges() {
            Ok(r) => r,
            Err(e) => return self.shared.fail(Failure::Other(e)),
        };
        let mut conn = match self.start(&mut ranges) {
            Ok(c) => c,
            Err(failed) => return self.end(None, Some(failed)),
        };
        for &(start, end) in after {
            let what = "the dump's views, triggers, routines and trailer".to_string();
            if let Err(failed) = conn.send(&mut ranges, start, end, what) {
                return self.end(Some(conn), Some(failed));
            }
        }
        self.end(Some(conn), None);
    }

    fn ranges(&self) -> Result<Ranges<'_>> {
        Ok(Ranges {
            store: self.load.store,
            chunks: chunk_list::open(self.load.set_dir, self.load.manifest)
                .map_err(Damaged::from)?,
            current: None,
            buf: Vec::new(),
        })
    }

    /// A client with the preamble sent.
    fn start(&self, ranges: &mut Ranges<'_>) -> Result<Conn, Pumped> {
        let client = LoadClient::start(self.client, &self.load.target.database)
            .map_err(|e| Pumped::Write(io::Error::other(format!("{e:#}"))))?;
        self.shared.started.fetch_add(1, Ordering::SeqCst);
        let pid = client.child.id();
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.push(pid);
        }
        let mut conn = Conn {
            terminate: crate::signals::terminate_on_signal(pid),
            client,
            lines: 0,
            parts: Vec::new(),
        };
        if self.shared.stopped() {
            // Stopped while it started: the halt missed it.
            let _ = conn.client.child.kill();
        }
        let end = self.preamble.get().copied().unwrap_or(0);
        match conn.send(ranges, 0, end, "the dump's preamble".into()) {
            Ok(()) => Ok(conn),
            Err(e) => {
                self.end(Some(conn), Some(e));
                Err(Pumped::Write(io::Error::other("already reported")))
            }
        }
    }

    /// Ends a connection: killed first when `failed` (a half statement must
    /// not run at EOF), then its input closed and its exit awaited; records
    /// the first failure.
    fn end(&self, conn: Option<Conn>, failed: Option<Pumped>) {
        let Some(mut conn) = conn else {
            if let Some(Pumped::Read(e)) = failed {
                self.shared.fail(Failure::Read(e));
            }
            return;
        };
        let pid = conn.client.child.id();
        if let Some(Pumped::Read(_)) = failed {
            let _ = conn.client.child.kill();
        }
        // No kill by pid once it may be reaped.
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.retain(|&p| p != pid);
        }
        let Conn {
            terminate,
            client:
                LoadClient {
                    mut child,
                    stdin,
                    stderr,
                },
            parts,
            ..
        } = conn;
        drop(stdin);
        let status = child.wait();
        drop(terminate);
        let stderr = stderr.join().unwrap_or_default();
        match (failed, status) {
            (Some(Pumped::Read(e)), _) => self.shared.fail(Failure::Read(e)),
            (_, Err(e)) => self.shared.fail(Failure::Other(
                anyhow!(e).context("while waiting for the database client"),
            )),
            (_, Ok(status)) if !status.success() => self.shared.fail(Failure::Client {
                what: part_at(&parts, &stderr),
                status,
                stderr,
            }),
            // Writing failed though the client exited 0: it stopped early.
            (Some(Pumped::Write(e)), Ok(_)) => self.shared.fail(Failure::Other(
                anyhow!(e).context("the database client stopped reading"),
            )),
            (None, Ok(_)) => {}
        }
    }
}

/// One running client and what it was sent, by line.
struct Conn {
    terminate: crate::signals::TerminateOnSignal,
    client: LoadClient,
    /// Lines sent so far.
    lines: u64,
    /// The first line of each part sent, and what it was.
    parts: Vec<(u64, String)>,
}

impl Conn {
    fn send(
        &mut self,
        ranges: &mut Ranges<'_>,
        start: u64,
        end: u64,
        what: String,
    ) -> Result<(), Pumped> {
        if self.parts.last().is_none_or(|(_, w)| *w != what) {
            self.parts.push((self.lines + 1, what));
        }
        let mut out = Counting {
            inner: &mut self.client.stdin,
            lines: &mut self.lines,
        };
        ranges.copy(start, end, &mut out)
    }
}

/// What a client was loading at the line its error names (`at line N`),
/// or the last part sent.
fn part_at(parts: &[(u64, String)], stderr: &str) -> String {
    let line = stderr
        .split(" at line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    let part = match line {
        Some(line) => parts.iter().rev().find(|(first, _)| *first <= line),
        None => parts.last(),
    };
    part.map_or_else(|| "the dump".to_string(), |(_, what)| what.clone())
}

/// Counts the lines written through it.
struct Counting<'a, W> {
    inner: &'a mut W,
    lines: &'a mut u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads byte ranges of the dump back from its chunks, ranges in rising
/// order: a chunk before the range is skipped unread, the one a range ends
/// in is kept for the next. Each chunk read is checked as the dump reader
/// checks it.
struct Ranges<'a> {
    store: &'a ObjectStore,
    chunks: ChunkLines,
    current: Option<DumpChunk>,
    buf: Vec<u8>,
}

impl Ranges<'_> {
    fn copy(&mut self, start: u64, end: u64, out: &mut impl Write) -> Result<(), Pumped> {
        let mut pos = start;
        while pos < end {
            let chunk = loop {
                if let Some(c) = &self.current
                    && c.offset <= pos
                    && pos < c.offset + c.size
                {
                    break c;
                }
                let next = self
                    .chunks
                    .next()
                    .ok_or_else(|| {
                        Pumped::Read(io::Error::other(Damaged(format!(
                            "the chunk list ends before byte {pos} of the dump"
                        ))))
                    })?
                    .map_err(|e| Pumped::Read(io::Error::other(Damaged::from(e))))?;
                if next.offset + next.size <= pos {
                    continue;
                }
                if next.offset > pos {
                    return Err(Pumped::Read(io::Error::other(Damaged(format!(
                        "the chunk list has no chunk for byte {pos} of the dump"
                    )))));
                }
                read_chunk(self.store, &next, &mut self.buf)
                    .map_err(|e| Pumped::Read(io::Error::other(e)))?;
                self.current = Some(next);
            };
            let from = (pos - chunk.offset) as usize;
            let to = (end.min(chunk.offset + chunk.size) - chunk.offset) as usize;
            out.write_all(&self.buf[from..to]).map_err(Pumped::Write)?;
            pos += (to - from) as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_error_is_told_with_the_part_at_its_line() {
        let parts = vec![
            (1, "the dump's preamble".to_string()),
            (12, "table `a`".to_string()),
            (40, "table `b`".to_string()),
        ];
        let err = "ERROR 1146 (42S02) at line 41: Table 'k.x' doesn't exist\n";
        assert_eq!(part_at(&parts, err), "table `b`");
        assert_eq!(part_at(&parts, "ERROR 1 at line 12: x"), "table `a`");
        assert_eq!(part_at(&parts, "killed"), "table `b`");
        assert_eq!(part_at(&[], "killed"), "the dump");
    }
}
