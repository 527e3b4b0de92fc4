//! Checks every source and target of a backup before the dump starts, so a
//! run that cannot succeed says why in one line without dumping anything:
//! repository, dump program, database, storage backend, attachment directory
//! or bucket.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::error::{ConfigError, Exit, config_error, exit_for};
use crate::layout::Layout;
use crate::mysql::{self, Client};
use crate::settings::{MysqlTarget, Settings};
use crate::signals;
use crate::snapshot::{self, Plan, Request};

/// What the checks found out, for the backup to go on with.
#[derive(Debug)]
pub struct Ready {
    /// The layout the live database and server.cfg agree on now. The dump's
    /// own `settings` row stays authoritative for the proof.
    pub layout: Layout,
    /// The snapshot plan: what will be snapshotted, or why nothing.
    pub plan: Plan,
}

/// Runs every check, in the order a human would: where the set goes, how the
/// database is read, what it says about the attachments, where they are.
/// Every failure is reported, one line each (the attachment checks need the
/// database's answer, so they wait for it). Exit codes: 2 for what the
/// configuration must change (wrong credentials, unknown database, missing
/// program or directory, s3), else 1 (repository not writable, server not
/// answering: both may be fine next time).
pub fn check(settings: &Settings) -> Result<Ready> {
    let mut problems = Vec::new();
    problems.extend(check_repository(&settings.repository).err());
    problems.extend(check_dump_program(&settings.mysql).err());
    let ready = live_storage(&settings.mysql).and_then(|live| {
        let layout = Layout::resolve(live.as_deref(), &settings.attachment_storage)?;
        if layout == Layout::S3 {
            check_bucket(settings)?;
        }
        let plan = plan_snapshot(settings, layout)?;
        Ok(Ready { layout, plan })
    });
    signals::check()?;
    match ready {
        Ok(ready) if problems.is_empty() => Ok(ready),
        Ok(_) => Err(refusal(problems)),
        Err(e) => {
            problems.push(e);
            Err(refusal(problems))
        }
    }
}

/// Free space against what a full set may take (`upgrade prepare`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Space {
    /// Bytes a full set may take, before deduplication.
    pub needed: u64,
    /// Where the estimate came from.
    pub estimated_from: String,
    /// Bytes free for root's use where the repository is.
    pub available: u64,
}

/// Estimates a full set from the newest set with a readable manifest (its
/// dump and attachments, uncompressed: an upper bound), else from the live
/// database's table sizes and the attachment tree, and compares it with
/// the free space where the repository is. Not enough is an error.
pub fn check_space(settings: &Settings) -> Result<Space> {
    let newest = crate::repo::Repository::open_at(&settings.repository)
        .ok()
        .and_then(|repo| repo.sets().ok())
        .and_then(|sets| {
            sets.into_iter()
                .rev()
                .find_map(|s| s.manifest.ok().map(|m| (s.id, m)))
        });
    let (needed, estimated_from) = match newest {
        Some((id, m)) => (
            m.database.bytes + m.attachments.capture.bytes,
            format!("set {id}"),
        ),
        None => {
            let client = mysql::Client::new(&settings.mysql)?;
            let db: u64 = client
                .query_value(
                    "SELECT COALESCE(SUM(data_length + index_length), 0) \
                     FROM information_schema.tables WHERE table_schema = DATABASE()",
                )?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut files = 0u64;
            for entry in walkdir_sizes(&settings.attachment_path) {
                files += entry;
            }
            (db + files, "the database and attachment sizes".into())
        }
    };
    let Some(local) = settings.repository.local() else {
        // Object storage has no free space to compare with.
        return Ok(Space {
            needed,
            estimated_from,
            available: u64::MAX,
        });
    };
    let existing = local
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let vfs = nix::sys::statvfs::statvfs(existing).map_err(|e| {
        anyhow!(
            "while checking the free space on {}: {e}",
            existing.display()
        )
    })?;
    let available = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
    let space = Space {
        needed,
        estimated_from,
        available,
    };
    if available < needed {
        return Err(anyhow!(
            "not enough space for a full set in {}: {} free, up to {} needed (estimated from {}); nothing was stopped",
            settings.repository,
            crate::output::bytes(available),
            crate::output::bytes(needed),
            space.estimated_from
        ));
    }
    Ok(space)
}

/// Sizes of the regular files below `root` (symlinks not followed).
fn walkdir_sizes(root: &Path) -> impl Iterator<Item = u64> {
    let mut stack = vec![root.to_path_buf()];
    std::iter::from_fn(move || {
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut total = 0;
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(e.path()),
                    Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                    _ => {}
                }
            }
            return Some(total);
        }
        None
    })
}

/// One error for every problem found: one line each, exit 2 when any of
/// them is the configuration's to fix.
fn refusal(problems: Vec<anyhow::Error>) -> anyhow::Error {
    let config = problems.iter().any(|e| exit_for(e) == Exit::Usage);
    let text = match problems.as_slice() {
        [one] => format!("{one:#}; nothing was dumped"),
        all => {
            let lines: String = all.iter().map(|e| format!("\n  {e:#}")).collect();
            format!("{} problems, nothing was dumped:{lines}", all.len())
        }
    };
    if config {
        ConfigError(text).into()
    } else {
        anyhow!(text)
    }
}

/// The repository, or the nearest directory above it that exists (a new
/// repository is created there), must be writable: a read-only disk fails
/// here, not after the dump.
fn check_repository(spec: &crate::settings::RepoSpec) -> Result<()> {
    let Some(repo) = spec.local() else {
        // Object storage: reachable, with these credentials, before the dump.
        let storage = crate::repo::storage::open(spec)?;
        storage
            .stat(crate::repo::storage::CONFIG)
            .with_context(|| format!("the repository {spec} cannot be reached"))?;
        return Ok(());
    };
    let existing = repo
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return config_error(format!(
            "the repository {} is not a directory ({} is a file)",
            repo.display(),
            existing.display()
        ));
    }
    nix::unistd::access(
        existing,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|errno| {
        anyhow!(
            "the repository {} is not writable ({}: {})",
            repo.display(),
            existing.display(),
            io::Error::from(errno)
        )
    })
}

/// The dump program must exist and be executable: found on PATH, or at the
/// configured path.
fn check_dump_program(target: &MysqlTarget) -> Result<()> {
    let program = mysql::dump_program(target).map_err(|e| ConfigError(format!("{e:#}")))?;
    let flags = nix::unistd::AccessFlags::X_OK;
    if !program.is_file() || nix::unistd::access(&program, flags).is_err() {
        return config_error(format!(
            "the dump command {} is not an executable file; set `[mysql] dump_command` \
             or install mariadb-client",
            program.display()
        ));
    }
    Ok(())
}

/// The backend the running server uses: the `settings` row of the LIVE
/// database (absent in older Kopano, and in a database without the table).
/// This is also the proof that the server answers with these credentials.
fn live_storage(target: &MysqlTarget) -> Result<Option<String>> {
    let client = Client::new(target).map_err(|e| ConfigError(format!("{e:#}")))?;
    match client.query_value("SELECT value FROM settings WHERE name = 'attachment_storage'") {
        Ok(value) => Ok(value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())),
        Err(e) if e.to_string().contains("ERROR 1146") => Ok(None),
        Err(e) => Err(database_error(target, e)),
    }
}

/// One line saying which server was asked and what it answered; wrong
/// credentials and an unknown database are the configuration's to fix (2).
fn database_error(target: &MysqlTarget, e: anyhow::Error) -> anyhow::Error {
    let answer = format!("{e:#}");
    let answer = answer.lines().next().unwrap_or_default().trim();
    let server = if target.host.is_empty() || target.host == "localhost" {
        match &target.socket {
            Some(socket) => format!("the database server at {}", socket.display()),
            None => "the local database server".to_owned(),
        }
    } else {
        format!("the database server {}:{}", target.host, target.port)
    };
    let what = format!(
        "{server} refused database `{}` for user `{}` ({answer})",
        target.database, target.user
    );
    let is_config = ["ERROR 1044", "ERROR 1045", "ERROR 1049", "ERROR 1698"]
        .iter()
        .any(|code| answer.contains(code));
    if is_config {
        ConfigError(what).into()
    } else {
        anyhow!(
            "{server} did not answer for database `{}`: {answer}",
            target.database
        )
    }
}

/// An `s3` store: complete settings (else exit 2), and the bucket answers
/// a signed HEAD and a one-key listing with these credentials (else exit 1,
/// naming the endpoint and bucket, never the secret).
fn check_bucket(settings: &Settings) -> Result<()> {
    let config = settings.s3.client_config()?;
    crate::commands::backup::s3_prefix(settings)?;
    let client = crate::s3::Client::new(config);
    client
        .head_bucket(&settings.s3.bucket)
        .map_err(|e| anyhow!("the attachment store is not reachable: {e}"))?;
    Ok(())
}

/// File layouts need the attachment directory; the database layout keeps
/// its attachments in the dump, so a missing directory is no reason to stop
/// and there is nothing to snapshot.
fn plan_snapshot(settings: &Settings, layout: Layout) -> Result<Plan> {
    let path = &settings.attachment_path;
    let is_dir = path.is_dir();
    let request = Request::from_settings(settings);
    match layout {
        Layout::S3 => Ok(snapshot::plan_none(
            &request,
            format!(
                "no snapshot: attachments are objects in S3 bucket {} at {}",
                settings.s3.bucket, settings.s3.hostname
            ),
        )),
        Layout::Database if !is_dir => Ok(snapshot::plan_none(
            &request,
            format!(
                "no snapshot: attachments are stored in the database \
                 (attachment_storage database) and {} does not exist",
                path.display()
            ),
        )),
        _ if !is_dir => config_error(missing_directory(settings, layout)),
        _ => snapshot::plan(&request),
    }
}

fn missing_directory(settings: &Settings, layout: Layout) -> String {
    let path: &PathBuf = &settings.attachment_path;
    let why = match std::fs::metadata(path) {
        Ok(_) => "is not a directory".to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be read ({e})"),
    };
    format!(
        "attachment_path {} {why}, but attachment_storage {layout} keeps the attachments \
         there; set attachment_path in {} (or `[kopano] attachment_path`)",
        path.display(),
        settings.server_cfg.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    fn target() -> MysqlTarget {
        MysqlTarget {
            host: "db.example".into(),
            port: 3307,
            user: "kopano".into(),
            password: Secret::new("s3cret"),
            socket: None,
            database: "kopano".into(),
            dump_command: None,
            timeouts: Default::default(),
        }
    }

    #[test]
    fn credentials_are_the_configs_to_fix_an_absent_server_may_come_back() {
        let denied = anyhow!("ERROR 1045 (28000): Access denied for user 'kopano'@'x'");
        let e = database_error(&target(), denied);
        assert_eq!(exit_for(&e), Exit::Usage);
        let msg = format!("{e:#}");
        assert!(
            msg.contains("db.example:3307") && msg.contains("`kopano`"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "{msg}");
        let gone = anyhow!("ERROR 2003 (HY000): Can't connect to MySQL server on 'db.example'");
        let e = database_error(&target(), gone);
        assert_eq!(exit_for(&e), Exit::Failure);
        assert!(format!("{e:#}").contains("did not answer"));
    }

    #[test]
    fn a_repository_below_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = check_repository(&crate::settings::RepoSpec::Local(file.join("repo"))).unwrap_err();
        assert_eq!(exit_for(&e), Exit::Usage);
        assert!(
            check_repository(&crate::settings::RepoSpec::Local(
                dir.path().join("new/repo")
            ))
            .is_ok()
        );
    }
}
