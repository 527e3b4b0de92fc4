//! Talking to the MySQL/MariaDB server through its own client programs.
//! Credentials go through a temporary option file (mode 0600 in a 0700
//! directory, removed on drop), never through a command line.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::settings::MysqlTarget;
use crate::watchdog::Watchdog;

/// A `[client]` option file holding the connection and the password.
pub struct ClientDefaults {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ClientDefaults {
    /// Writes the option file for `target`. `host` empty or `localhost`
    /// means the unix socket, as in Kopano.
    pub fn write(target: &MysqlTarget) -> Result<ClientDefaults> {
        remove_stale_credentials();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{CRED_PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("while creating a private directory for the database credentials")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join("client.cnf");
        let mut text = String::from("[client]\n");
        text += &format!("user={}\n", quote(&target.user));
        text += &format!("password={}\n", quote(target.password.expose()));
        if target.host.is_empty() || target.host == "localhost" {
            text += "host=localhost\n";
            if let Some(socket) = &target.socket {
                text += &format!("socket={}\n", quote(&socket.to_string_lossy()));
            }
        } else {
            text += &format!(
                "host={}\nport={}\nprotocol=TCP\n",
                quote(&target.host),
                target.port
            );
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context("while writing the database credentials file")?;
        file.write_all(text.as_bytes())?;
        Ok(ClientDefaults { dir, path })
    }

    /// The argument that must come FIRST on the client's command line.
    pub fn arg(&self) -> OsString {
        let mut arg = OsString::from("--defaults-file=");
        arg.push(&self.path);
        arg
    }

    /// The directory holding the file (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

const CRED_PREFIX: &str = "kcbackup-cred-";

/// Removes credential directories of kcbackup runs that died without
/// cleaning up (SIGKILL, power loss): the owner's pid is in the name.
fn remove_stale_credentials() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(CRED_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Quotes an option-file value: inside double quotes `#` is not a comment,
/// and backslash escapes `\\` and `\"` are understood by the client library.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Finds the first of `names` on `$PATH`.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The command-line client: `mariadb`, else `mysql`.
pub fn client_program() -> Result<PathBuf> {
    find_program(&["mariadb", "mysql"]).context(
        "neither `mariadb` nor `mysql` is on PATH; install mariadb-client (or mysql-client)",
    )
}

/// The dump program: the configured one, else `mariadb-dump`, else `mysqldump`.
pub fn dump_program(target: &MysqlTarget) -> Result<PathBuf> {
    match &target.dump_command {
        Some(cmd) if cmd.contains('/') => Ok(PathBuf::from(cmd)),
        Some(cmd) => find_program(&[cmd.as_str()])
            .with_context(|| format!("dump command `{cmd}` is not on PATH")),
        None => find_program(&["mariadb-dump", "mysqldump"])
            .context("neither `mariadb-dump` nor `mysqldump` is on PATH; install mariadb-client"),
    }
}

/// A connection description plus its credentials file, for running queries.
pub struct Client {
    program: PathBuf,
    defaults: ClientDefaults,
    database: String,
    /// How long one query may take; see [`Timeouts::connect`].
    limit: Duration,
}

/// The message of a query that took too long: names the setting to change.
fn timed_out(limit: Duration) -> anyhow::Error {
    anyhow!(
        "the database server did not answer within {} s (timeout [mysql] connect_timeout_s); \
         it may be hung or overloaded",
        limit.as_secs()
    )
}

impl Client {
    /// Prepares a client for `target`; does not connect yet.
    pub fn new(target: &MysqlTarget) -> Result<Client> {
        Ok(Client {
            program: client_program()?,
            defaults: ClientDefaults::write(target)?,
            database: target.database.clone(),
            limit: target.timeouts.connect,
        })
    }

    pub fn defaults(&self) -> &ClientDefaults {
        &self.defaults
    }

    /// Runs `sql` in batch mode (tab-separated, no column names) and returns
    /// stdout. The error carries the client's own message (never the password).
    /// The client is killed when the whole query, connecting included, takes
    /// longer than the limit: a stopped server accepts connections in the
    /// kernel's backlog and then never answers, so a connect timeout alone
    /// would wait forever.
    pub fn query(&self, sql: &str) -> Result<String> {
        let handle = duct::cmd(
            &self.program,
            [
                self.defaults.arg(),
                "--batch".into(),
                "--skip-column-names".into(),
                "--database".into(),
                self.database.clone().into(),
                "-e".into(),
                sql.into(),
            ],
        )
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .with_context(|| format!("while running {}", self.program.display()))?;
        let waited = handle
            .wait_timeout(self.limit)
            .with_context(|| format!("while waiting for {}", self.program.display()))?;
        let Some(out) = waited else {
            let _ = handle.kill();
            return Err(timed_out(self.limit));
        };
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `sql` and hands each output row (tab-separated) to `row` as it
    /// streams in, so that a million-row answer never sits in memory. The
    /// client is killed when no row came for the limit.
    pub fn for_each_row(&self, sql: &str, row: impl FnMut(&str) -> Result<()>) -> Result<()> {
        let dog = Watchdog::new(self.limit);
        let handle = self.row_reader(sql)?;
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                dog.watch(|| {
                    let _ = handle.kill();
                })
            });
            let result = read_rows(&handle, &dog, row);
            dog.stop();
            result
        });
        if dog.fired() {
            return Err(timed_out(self.limit));
        }
        result
    }

    fn row_reader(&self, sql: &str) -> Result<duct::ReaderHandle> {
        duct::cmd(
            &self.program,
            [
                self.defaults.arg(),
                "--batch".into(),
                "--skip-column-names".into(),
                "--quick".into(),
                "--database".into(),
                self.database.clone().into(),
                "-e".into(),
                sql.into(),
            ],
        )
        .stdin_null()
        .stderr_capture()
        .reader()
        .with_context(|| format!("while running {}", self.program.display()))
    }

    /// The first column of the first row, if any.
    pub fn query_value(&self, sql: &str) -> Result<Option<String>> {
        let out = self.query(sql)?;
        Ok(out
            .lines()
            .next()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string()))
    }
}

/// Reads the client's output line by line; `dog` counts only the waits.
fn read_rows(
    reader: &duct::ReaderHandle,
    dog: &Watchdog,
    mut row: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut lines = std::io::BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        dog.touch();
        let n = std::io::BufRead::read_line(&mut lines, &mut line)
            .map_err(|e| anyhow!("{e}"))
            .context("the database client failed")?;
        // The caller's work on the row is not the server's delay.
        dog.pause();
        if n == 0 {
            return Ok(());
        }
        row(line.trim_end_matches('\n'))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_backslash_and_double_quote_only() {
        assert_eq!(quote(r#"p#ss w"o'rd\x"#), r#""p#ss w\"o'rd\\x""#);
    }
}
