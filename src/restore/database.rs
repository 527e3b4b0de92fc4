//! Loading a stored dump into a database: decompressed straight into the
//! `mariadb`/`mysql` client, with both checksums verified on the way.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::error::config_error;
use crate::mysql::{Client, client_program};
use crate::repo::digest::HashReader;
use crate::repo::manifest::Manifest;
use crate::settings::MysqlTarget;

/// Big enough for any row mariadb-dump writes (its limit is 1 GiB too).
const CLIENT_MAX_PACKET: &str = "--max-allowed-packet=1073741824";

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRestore {
    pub database: String,
    /// Uncompressed SQL bytes loaded.
    pub bytes: u64,
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

/// Loads the set's dump into `target.database`. Refuses a database that
/// already holds tables unless `force`, in which case it is dropped first.
pub fn restore(
    set_dir: &Path,
    manifest: &Manifest,
    target: &MysqlTarget,
    force: bool,
) -> Result<DatabaseRestore> {
    let started = Instant::now();
    let name = target.database.clone();
    check_name(&name)?;
    let admin = Client::new(&MysqlTarget {
        database: "information_schema".into(),
        ..target.clone()
    })?;
    let tables = admin
        .query_value(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}'"
        ))
        .context("while connecting to the restore server")?
        .unwrap_or_default();
    if tables != "0" {
        if !force {
            return config_error(format!(
                "database `{name}` is not empty ({tables} tables); restore refuses to mix data \
                 (use --force to drop and replace it)"
            ));
        }
        admin.query(&format!("DROP DATABASE `{name}`"))?;
    }
    admin.query(&format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"
    ))?;

    let dump_path = set_dir.join(&manifest.database.file);
    let stored =
        File::open(&dump_path).with_context(|| format!("while opening {}", dump_path.display()))?;
    let mut stored = HashReader::new(stored);
    let mut sql = HashReader::new(zstd::Decoder::new(&mut stored)?);

    let client = Client::new(target)?;
    let mut child = Command::new(client_program()?)
        .arg(client.defaults().arg())
        .arg(CLIENT_MAX_PACKET)
        .arg("--binary-mode")
        .arg("--database")
        .arg(&name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("while starting the database client")?;
    let mut stdin = child.stdin.take().context("client has no stdin")?;
    let mut stderr = child.stderr.take().context("client has no stderr")?;
    let stderr_thread = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let copied = io::copy(&mut sql, &mut stdin);
    drop(stdin);
    let status = child
        .wait()
        .context("while waiting for the database client")?;
    let client_err = stderr_thread.join().unwrap_or_default();
    if !status.success() {
        let hint =
            if client_err.contains("max_allowed_packet") || client_err.contains("packet bigger") {
                " (the server's max_allowed_packet is smaller than a row of the dump: raise it, \
             e.g. SET GLOBAL max_allowed_packet = 1073741824)"
            } else {
                ""
            };
        bail!(
            "loading the dump into `{name}` failed: {}{hint}",
            client_err.trim()
        );
    }
    copied.with_context(|| format!("while reading {}", dump_path.display()))?;
    let (bytes, sha256) = sql.finish();
    io::copy(&mut stored, &mut io::sink())?;
    let (_, stored_sha256) = stored.finish();
    if stored_sha256 != manifest.database.stored_sha256 || sha256 != manifest.database.sha256 {
        bail!(
            "{} does not match the manifest's checksum: the set is damaged",
            dump_path.display()
        );
    }
    Ok(DatabaseRestore {
        database: name,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
