//! Loading a stored dump into a database: read through the one dump
//! reader (each chunk checked before it is passed on, the whole dump's
//! checksum at the end) straight into the `mariadb`/`mysql` client.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::parallel;
use crate::dump::reader;
use crate::error::{config_error, damaged};
use crate::mysql::{Client, client_program};
use crate::repo::digest::file_digest;
use crate::repo::manifest::Manifest;
use crate::repo::objects::ObjectStore;
use crate::settings::MysqlTarget;

/// Big enough for any row mariadb-dump writes (its limit is 1 GiB too).
const CLIENT_MAX_PACKET: &str = "--max-allowed-packet=1073741824";

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRestore {
    pub database: String,
    /// Uncompressed SQL bytes loaded.
    pub bytes: u64,
    /// `mariadb` clients it took: the table connections plus the one for
    /// what runs after them; 1 for a single stream.
    pub connections: usize,
    pub seconds: f64,
}

/// Database names we create: plain identifiers only, so quoting stays trivial.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-');
    if !ok {
        return config_error(format!(
            "database name {name:?}: use letters, digits, `_`, `$` or `-` (at most 64)"
        ));
    }
    Ok(())
}

/// How a target database stands before a restore.
pub struct TargetCheck {
    /// Tables it holds now (dropped with the database when forced).
    pub tables: u64,
    /// The server's `max_allowed_packet` for a new connection.
    pub max_packet: u64,
}

/// Read-only check of the target: reachable, and empty unless `force`.
/// Runs before anything of any target is written.
pub fn check_target(target: &MysqlTarget, force: bool) -> Result<TargetCheck> {
    let name = &target.database;
    check_name(name)?;
    let admin = admin_client(target)?;
    let out = admin
        .query(&format!(
            "SELECT COUNT(*), @@max_allowed_packet FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{name}'"
        ))
        .with_context(|| format!("while connecting to the restore server for `{name}`"))?;
    let mut cols = out.trim().split('\t').map(|v| v.parse::<u64>());
    let (Some(Ok(tables)), Some(Ok(max_packet))) = (cols.next(), cols.next()) else {
        bail!("unexpected answer from the restore server: {out:?}");
    };
    if tables > 0 && !force {
        return config_error(format!(
            "database `{name}` is not empty ({tables} tables); restore refuses to mix data \
             (use --force to drop and replace it)"
        ));
    }
    Ok(TargetCheck { tables, max_packet })
}

fn admin_client(target: &MysqlTarget) -> Result<Client> {
    Client::new(&MysqlTarget {
        database: "information_schema".into(),
        ..target.clone()
    })
}

/// How many connections load tables at once by default: one per core, at
/// most 4 (past that the server's own threads are the limit).
pub fn default_jobs() -> usize {
    thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

/// The drill's default: its load runs beside the attachment restore, so
/// it takes half the cores. On two cores one stream was the faster drill
/// (database load 7.4 s against 7.0 s with two connections, but the
/// attachment restore beside it 11.5 s against 17.3 s; README Benchmarks).
pub fn default_drill_jobs() -> usize {
    (thread::available_parallelism().map_or(1, |n| n.get()) / 2).clamp(1, 4)
}

/// Loads the set's dump into `target.database`, its tables over `jobs`
/// connections at once (1: the one stream it is; see [`parallel`]). Refuses a database that
/// already holds tables unless `force`, in which case it is dropped first.
/// A legacy single-file dump is checked against the manifest before the
/// target is touched; each chunk is checked before it is sent, and the SQL
/// text's checksum at its end.
pub fn restore(
    set_dir: &Path,
    manifest: &Manifest,
    store: &ObjectStore,
    target: &MysqlTarget,
    force: bool,
    jobs: usize,
) -> Result<DatabaseRestore> {
    let partial = format!(
        "database `{}` holds a partial load: drop it or restore again with --force",
        target.database
    );
    load(set_dir, manifest, store, target, force, &partial, jobs)
}

/// [`restore`], where `partial` tells what a load that failed half-way
/// leaves behind: a drill's throwaway server is not the operator's to fix.
pub fn load(
    set_dir: &Path,
    manifest: &Manifest,
    store: &ObjectStore,
    target: &MysqlTarget,
    force: bool,
    partial: &str,
    jobs: usize,
) -> Result<DatabaseRestore> {
    let started = Instant::now();
    let name = target.database.clone();
    let state = check_target(target, force)?;
    if let Some(dump_path) = reader::legacy_file(set_dir, manifest) {
        let (stored_bytes, stored_sha256) = file_digest(&dump_path)?;
        if stored_sha256 != manifest.database.stored_sha256
            || stored_bytes != manifest.database.stored_bytes
        {
            return damaged(format!(
                "{} does not match the manifest's checksum: the set is damaged, nothing was \
                 loaded",
                dump_path.display()
            ));
        }
    }
    let dump_name = reader::describe(set_dir, manifest);

    let admin = admin_client(target)?;
    if state.tables > 0 {
        admin.query(&format!("DROP DATABASE `{name}`"))?;
    }
    admin.query(&format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"
    ))?;

    if jobs > 1 && reader::legacy_file(set_dir, manifest).is_none() {
        let (bytes, connections) = parallel::load(
            &parallel::Load {
                set_dir,
                manifest,
                store,
                target,
                max_packet: state.max_packet,
                partial,
                dump_name: &dump_name,
            },
            jobs,
        )?;
        return Ok(DatabaseRestore {
            database: name,
            bytes,
            connections,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    let mut sql = reader::open(set_dir, manifest, store)?;
    let client = Client::new(target)?;
    let LoadClient {
        mut child,
        stdin,
        stderr: stderr_thread,
    } = LoadClient::start(&client, &name)?;
    let terminate = crate::signals::terminate_on_signal(child.id());
    let mut guard = PacketGuard::new(stdin, state.max_packet);
    let copied = pump(&mut sql, &mut guard);
    if copied.is_err() {
        // Kill before stdin closes: the client must not run the half
        // statement it holds at EOF.
        let _ = child.kill();
    }
    let (longest, too_long) = (guard.longest, guard.too_long);
    // Closes the client's stdin: EOF ends its input.
    drop(guard);
    let status = child
        .wait()
        .context("while waiting for the database client")?;
    drop(terminate);
    let client_err = stderr_thread.join().unwrap_or_default();
    if let Some(line) = too_long {
        return Err(too_long_error(line, state.max_packet, partial));
    }
    // A bad chunk (or the dump's checksum) stopped the copy, and the client
    // was killed for it: that is the cause to tell, not the client's death.
    if let Err(Pumped::Read(e)) = &copied {
        return damaged(format!(
            "while reading {dump_name}: {e}; the set is damaged; {partial}"
        ));
    }
    if !status.success() {
        return Err(client_failed(
            "the dump",
            &name,
            status,
            &client_err,
            (longest, state.max_packet),
            partial,
        ));
    }
    let bytes = copied
        .map_err(|e| match e {
            Pumped::Read(e) | Pumped::Write(e) => e,
        })
        .with_context(|| format!("while loading {dump_name}: {partial}"))?;
    Ok(DatabaseRestore {
        database: name,
        bytes,
        connections: 1,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A statement at `line` of the dump the server would refuse as too long.
pub(super) fn too_long_error(line: u64, max_packet: u64, partial: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the statement at line {line} of the dump has more than {max_packet} bytes, more than \
         the server's max_allowed_packet ({max_packet} bytes): raise it (e.g. SET GLOBAL \
         max_allowed_packet = 1073741824, or max_allowed_packet in the [mysqld] section) and \
         restore again; {partial}"
    )
}

/// A client that exited with `status` while loading `what` into `database`:
/// its error lines, and a hint when the packet size is the likely cause
/// (`packet`: the longest statement sent, the server's limit).
pub(super) fn client_failed(
    what: &str,
    database: &str,
    status: std::process::ExitStatus,
    stderr: &str,
    packet: (u64, u64),
    partial: &str,
) -> anyhow::Error {
    let (longest, max_packet) = packet;
    let hint = if stderr.contains("max_allowed_packet")
        || stderr.contains("packet bigger")
        || stderr.contains("gone away")
    {
        format!(
            " (the longest statement sent had {longest} bytes; the server's \
             max_allowed_packet is {max_packet}: raise it)"
        )
    } else {
        String::new()
    };
    let said = match client_errors(stderr) {
        text if text.is_empty() => String::new(),
        text => format!(": {text}"),
    };
    anyhow::anyhow!("loading {what} into `{database}` failed ({status}){said}{hint}; {partial}")
}

/// A `mariadb` client reading SQL on its stdin into `database`, its
/// stderr collected on a thread (so a chatty client cannot block).
pub(super) struct LoadClient {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stderr: thread::JoinHandle<String>,
}

impl LoadClient {
    pub fn start(client: &Client, database: &str) -> Result<LoadClient> {
        let mut child = Command::new(client_program()?)
            .arg(client.defaults().arg())
            .arg(CLIENT_MAX_PACKET)
            .arg("--binary-mode")
            .arg("--database")
            .arg(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("while starting the database client")?;
        let stdin = child.stdin.take().context("client has no stdin")?;
        let mut stderr = child.stderr.take().context("client has no stderr")?;
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(LoadClient {
            child,
            stdin,
            stderr,
        })
    }
}

/// Which side of [`pump`] failed.
pub(super) enum Pumped {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy` that tells a bad dump (reading) from a failing client (writing).
pub(super) fn pump(from: &mut impl Read, to: &mut impl Write) -> Result<u64, Pumped> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Pumped::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Pumped::Write)?;
        total += n as u64;
    }
}

/// Passes the SQL on to the client, measuring the longest statement and
/// stopping before one the server would refuse, so the error says why
/// instead of "gone away". mariadb-dump ends every statement with `;` at the
/// end of a line, and a newline inside a value is always escaped, so a line
/// ending in `;` ends a statement (rows of one INSERT may span lines).
pub(super) struct PacketGuard<W> {
    pub inner: W,
    limit: u64,
    /// 1-based line number where the current statement started.
    start_line: u64,
    line: u64,
    current: u64,
    pub longest: u64,
    last_byte: u8,
    /// The line where a statement over `limit` started.
    pub too_long: Option<u64>,
}

impl<W> PacketGuard<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        PacketGuard {
            inner,
            limit,
            start_line: 1,
            line: 1,
            current: 0,
            longest: 0,
            last_byte: b'\n',
            too_long: None,
        }
    }
}

impl<W: Write> Write for PacketGuard<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', buf).chain(std::iter::once(buf.len())) {
            // The newline itself does not go into the packet.
            self.current += (nl - start) as u64;
            self.longest = self.longest.max(self.current);
            if self.current > self.limit {
                self.too_long = Some(self.start_line);
                return Err(io::Error::other("statement larger than max_allowed_packet"));
            }
            if nl < buf.len() {
                let before = if nl > 0 { buf[nl - 1] } else { self.last_byte };
                self.line += 1;
                if before == b';' {
                    self.current = 0;
                    self.start_line = self.line;
                } else {
                    // The line break stays inside the statement.
                    self.current += 1;
                }
            }
            start = nl + 1;
        }
        if let Some(&b) = buf.last() {
            self.last_byte = b;
        }
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The client's error lines, without the statement text it echoes in batch
/// mode (which can be megabytes of hex).
pub(super) fn client_errors(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.contains("error"))
        .collect();
    if errors.is_empty() {
        let t = stderr.trim();
        let cut = t.len().saturating_sub(500);
        let cut = (cut..=t.len())
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(0);
        t[cut..].to_string()
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_guard_measures_statements_and_stops_at_the_limit() {
        let mut g = PacketGuard::new(Vec::new(), 12);
        g.write_all(b"ab;\nINSERT (1),").unwrap();
        assert!(g.write_all(b"\n(2);\nx;\n").is_err());
        // `INSERT (1),` + newline + `(2);` = 16 > 12 would have failed:
        assert_eq!(g.too_long, Some(2));
        let mut g = PacketGuard::new(Vec::new(), 20);
        g.write_all(b"ab;\nINSERT (1),").unwrap();
        g.write_all(b"\n(2);\nx;\n").unwrap();
        assert_eq!((g.longest, g.line, g.too_long), (16, 5, None));
        assert!(g.write_all(b"0123456789\n0123456789x").is_err());
        assert_eq!(g.too_long, Some(5));
        assert_eq!(g.inner, b"ab;\nINSERT (1),\n(2);\nx;\n");
    }

    #[test]
    fn client_errors_drop_the_echoed_statement() {
        let err = "--------------\nINSERT INTO `lob` VALUES (1,0,0x00)\n--------------\n\n\
                   ERROR 2006 (HY000) at line 632: Server has gone away\n";
        assert_eq!(
            client_errors(err),
            "ERROR 2006 (HY000) at line 632: Server has gone away"
        );
    }
}
