//! A throwaway MariaDB server in a temporary directory, for tests, `kcbackup
//! demo` and restore drills. A small `sh` supervisor owns `mariadbd` and tears
//! everything down as soon as the process that started it goes away.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::settings::{MysqlTarget, Secret};

/// How long the server may take to answer its first ping.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Client-side packet limit; the server is started with the same value.
const MAX_PACKET: &str = "--max-allowed-packet=256M";

/// The supervisor. `$1` = directory, `$2` = keep flag, the rest = mariadbd
/// command. It prints mariadbd's pid, then blocks reading stdin: our end of
/// that pipe closes when we stop the sandbox OR when our process dies in any
/// way (panic, SIGKILL, a static never dropped). Then it stops mariadbd
/// (SIGTERM, SIGKILL after 30 s) and removes the directory. A parent-death
/// signal would not do: it fires when the spawning *thread* exits.
const SUPERVISOR: &str = r#"
dir=$1; keep=$2; shift 2
"$@" </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid"
exec >/dev/null
trap '' HUP INT QUIT PIPE
read -r _ignored
kill -TERM "$pid" 2>/dev/null
( sleep 30 & s=$!; trap 'kill $s 2>/dev/null; exit 0' TERM; wait $s; kill -KILL "$pid" 2>/dev/null ) &
killer=$!
wait "$pid"
kill "$killer" 2>/dev/null
if [ "$keep" != 1 ]; then rm -rf -- "$dir"; fi
"#;

/// What kind of sandbox to start.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Enable the binary log (`--log-bin --server-id=1`), e.g. for `--master-data`.
    pub binlog: bool,
    /// Where to create the temporary directory; default `/tmp` (the socket
    /// path must stay short).
    pub parent_dir: Option<PathBuf>,
    /// Leave the directory (datadir, logs) behind after stopping.
    pub keep: bool,
    /// A server for one big load (a drill): its InnoDB buffer pool sized to
    /// the machine ([`load_buffer_pool`]) instead of the small default
    /// that lets many test servers share a machine.
    pub tuned_for_load: bool,
}

/// The buffer pool of a server [`SandboxOptions::tuned_for_load`]: an
/// eighth of the machine's memory, at least 128 MiB, at most 1 GiB (more
/// buys a one-off load little; the pool fills only as pages are used).
pub fn load_buffer_pool() -> u64 {
    const MIB: u64 = 1 << 20;
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0);
    // Whole 128 MiB units, as InnoDB rounds to its chunk size anyway.
    ((total / 8).clamp(128 * MIB, 1024 * MIB) / (128 * MIB)) * 128 * MIB
}

/// A running throwaway MariaDB server. Usable from many threads at once:
/// every query runs in its own `mariadb` client process.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
    socket: PathBuf,
    binlog: bool,
    keep: bool,
    mariadbd_pid: u32,
    /// `None` once stopped.
    supervisor: Option<Child>,
}

impl Sandbox {
    /// Creates the datadir, starts `mariadbd` under the supervisor and waits
    /// until it answers.
    pub fn start(opts: &SandboxOptions) -> anyhow::Result<Sandbox> {
        let parent = opts
            .parent_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let tmp = tempfile::Builder::new()
            .prefix("kcsb-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a sandbox directory in {}", parent.display()))?;
        // Absolute, because mariadbd resolves relative paths against its datadir.
        let dir = tmp
            .path()
            .canonicalize()
            .context("resolving the sandbox directory")?;
        let socket = dir.join("mysqld.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "sandbox socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter parent_dir",
                socket.display()
            );
        }
        let is_root = nix::unistd::geteuid().is_root();
        std::fs::create_dir(dir.join("tmp")).context("creating the sandbox tmpdir")?;
        install_db(&dir, is_root)?;

        let mut mariadbd = vec![
            "mariadbd".to_string(),
            "--no-defaults".into(),
            format!("--datadir={}", dir.join("data").display()),
            format!("--socket={}", socket.display()),
            "--skip-networking".into(),
            format!("--pid-file={}", dir.join("mariadbd.pid").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            // Never the shared /tmp: at start the server deletes stale
            // `#sql*` files there, which may belong to another live server.
            format!("--tmpdir={}", dir.join("tmp").display()),
            format!(
                "--innodb-buffer-pool-size={}",
                if opts.tuned_for_load {
                    load_buffer_pool()
                } else {
                    128 << 20
                }
            ),
            "--innodb-log-file-size=256M".into(),
            // A throwaway server: durability is worth nothing, load speed
            // is. No log flush at commit, no doublewrite buffer, and (below,
            // unless asked for) no binary log.
            "--innodb-flush-log-at-trx-commit=0".into(),
            "--innodb-doublewrite=0".into(),
            "--max-allowed-packet=1G".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_general_ci".into(),
        ];
        if is_root {
            mariadbd.push("--user=root".into());
        }
        if opts.binlog {
            mariadbd.push(format!("--log-bin={}", dir.join("binlog").display()));
            mariadbd.push("--server-id=1".into());
            mariadbd.push("--sync-binlog=0".into());
        } else {
            mariadbd.push("--skip-log-bin".into());
        }

        let supervisor_log = File::create(dir.join("supervisor.log"))
            .with_context(|| format!("creating {}/supervisor.log", dir.display()))?;
        let mut child = spawn_supervised(&dir, opts.keep, &mariadbd, supervisor_log)?;
        // From here on the supervisor owns the directory's removal.
        let _ = tmp.keep();
        let pid_line = read_pid_line(&mut child);
        let mut sandbox = Sandbox {
            dir,
            socket,
            binlog: opts.binlog,
            keep: opts.keep,
            mariadbd_pid: 0,
            supervisor: Some(child),
        };
        match pid_line {
            Some(pid) => sandbox.mariadbd_pid = pid,
            None => bail!(
                "the sandbox supervisor did not report a mariadbd pid\n{}",
                sandbox.log_tail()
            ),
        }
        if let Err(e) = sandbox.wait_ready() {
            // Read the log before Drop removes the directory.
            bail!("{e:#}\n{}", sandbox.log_tail());
        }
        Ok(sandbox)
    }

    /// The temporary directory holding `data/`, the socket and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the binary log is enabled.
    pub fn binlog(&self) -> bool {
        self.binlog
    }

    /// The pid of `mariadbd` (for tests of the cleanup).
    pub fn mariadbd_pid(&self) -> u32 {
        self.mariadbd_pid
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// root over the socket (no password), on `database`.
    pub fn root_target(&self, database: &str) -> MysqlTarget {
        MysqlTarget {
            host: "localhost".into(),
            port: 3306,
            user: "root".into(),
            password: Secret::default(),
            socket: Some(self.socket.clone()),
            database: database.into(),
            dump_command: None,
            // Our own server: a check on a big restored table may take a
            // while, and there is no production lock to free.
            timeouts: crate::settings::Timeouts {
                connect: Duration::from_secs(3600),
                stall: Duration::from_secs(3600),
            },
        }
    }

    /// Runs SQL as root via the `mariadb` client (batch mode, no column
    /// names); returns stdout. Errors include the client's stderr.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = duct::cmd("mariadb", self.client_args(None))
            .stdin_bytes(sql.as_bytes())
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .context("running the mariadb client")?;
        if !out.status.success() {
            bail!(
                "mariadb client failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("mariadb client output is not UTF-8")
    }

    /// Streams SQL from a reader into the `mariadb` client, optionally with a
    /// default database.
    pub fn load(&self, database: Option<&str>, sql: &mut dyn Read) -> anyhow::Result<()> {
        self.load_with(database, |w| {
            io::copy(sql, w)?;
            Ok(())
        })
    }

    /// Like [`Sandbox::load`], but `produce` writes the SQL into the client's
    /// stdin, so that generated SQL streams without a pipe thread.
    pub fn load_with<T>(
        &self,
        database: Option<&str>,
        produce: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut child = Command::new("mariadb")
            .args(self.client_args(database))
            // Raw bytes pass through; no client `\` commands outside strings.
            .arg("--binary-mode")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the mariadb client")?;
        let mut stderr = child.stderr.take().context("client stderr")?;
        // Drain stderr concurrently so a chatty client cannot block on it.
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let stdin = child.stdin.take().context("client stdin")?;
        let mut w = BufWriter::with_capacity(1 << 16, stdin);
        let produced = produce(&mut w).and_then(|v| {
            w.flush()?;
            Ok(v)
        });
        if produced.is_err() {
            // Kill before stdin closes: the client must not execute a
            // half-written statement at EOF.
            let _ = child.kill();
        }
        drop(w);
        let status = child.wait().context("waiting for the mariadb client")?;
        let msg = err_reader.join().unwrap_or_default();
        let msg = String::from_utf8_lossy(&msg).trim().to_string();
        match produced {
            // A client that died of an SQL error shows up here as a broken pipe.
            Err(e) if msg.is_empty() => Err(e),
            Err(e) => Err(e.context(format!("mariadb client: {msg}"))),
            Ok(_) if !status.success() => bail!("mariadb client failed ({status}): {msg}"),
            Ok(v) => Ok(v),
        }
    }

    /// Shuts the server down, waits for it and removes the directory (unless `keep`).
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn client_args(&self, database: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--socket={}", self.socket.display()),
            "--user=root".into(),
            "--batch".into(),
            "--skip-column-names".into(),
            "--default-character-set=utf8mb4".into(),
            MAX_PACKET.into(),
        ];
        if let Some(db) = database {
            args.push(format!("--database={db}"));
        }
        args
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ping = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket.display()))
                .args(["--user=root", "--connect-timeout=2", "ping"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running mariadb-admin")?;
            if ping.success() {
                return Ok(());
            }
            if !process_alive(self.mariadbd_pid) {
                bail!("mariadbd exited during startup");
            }
            if Instant::now() > deadline {
                bail!("mariadbd did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of error.log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- tail of {} ---\n{tail}", self.error_log().display())
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.supervisor.take() else {
            return Ok(());
        };
        // Closing the pipe is the one and only stop signal (see SUPERVISOR).
        drop(child.stdin.take());
        let status = child.wait().context("waiting for the sandbox supervisor")?;
        if !self.keep && self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        if !status.success() {
            bail!("sandbox supervisor exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn install_db(dir: &Path, is_root: bool) -> anyhow::Result<()> {
    let log_path = dir.join("install.log");
    let log = File::create(&log_path).context("creating install.log")?;
    let mut cmd = Command::new("mariadb-install-db");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        // Passed through to the bootstrap server: see the note at --tmpdir.
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if is_root {
        cmd.arg("--user=root");
    }
    let status = cmd.status().context("running mariadb-install-db")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("mariadb-install-db failed ({status}):\n{text}");
    }
    Ok(())
}

/// Starts `command` under [`SUPERVISOR`], which removes `dir` (unless
/// `keep`) once the process is gone. The child's stdin is the stop signal:
/// drop it (or exit) and the supervisor stops the process. Read the
/// process's pid with [`read_pid_line`] next. Also used by the tests' S3
/// servers.
pub fn spawn_supervised(
    dir: &Path,
    keep: bool,
    command: &[String],
    log: File,
) -> anyhow::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("kcbackup-sandbox")
        .arg(dir)
        .arg(if keep { "1" } else { "0" })
        .args(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        // Own process group: a Ctrl-C on the terminal must reach only us,
        // so that the supervisor survives to clean up.
        .process_group(0)
        .spawn()
        .context("starting the sandbox supervisor (sh)")
}

/// The first line the supervisor prints: the supervised process's pid.
pub fn read_pid_line(child: &mut Child) -> Option<u32> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    line.trim().parse().ok()
}

/// True while `pid` exists and is not a zombie (a dead child of the
/// supervisor stays a zombie until the supervisor reaps it).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}
