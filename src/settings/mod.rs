//! Configuration: the tool's own TOML file plus Kopano's `server.cfg`,
//! validated into one [`Settings`] that the rest of the program uses.
//! Precedence, lowest first: Kopano's defaults, `server.cfg`, the TOML
//! file, the command line.

pub mod kopano_cfg;
pub mod repos;
pub mod s3;
pub mod tool;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, config_error};
use kopano_cfg::KopanoCfg;
use tool::ToolConfig;

pub use repos::{EncryptionSpec, RepoSpec, Repositories, S3Repo};

/// Used when neither `--config` nor `KCBACKUP_CONFIG` is given; may be absent.
pub const DEFAULT_TOOL_CONFIG: &str = "/etc/kcbackup/kcbackup.toml";
/// Used when neither the TOML file nor `KOPANO_CONFIG_PATH` says otherwise.
pub const DEFAULT_SERVER_CFG: &str = "/etc/kopano/server.cfg";
pub const DEFAULT_REPOSITORY: &str = "/var/lib/kcbackup";
pub const DEFAULT_ATTACHMENT_PATH: &str = "/var/lib/kopano/attachments";
/// Kopano 9+'s default; 8.7 defaulted to `files`, but the database's
/// `settings` table is authoritative either way (facts, section 3).
pub const DEFAULT_ATTACHMENT_STORAGE: &str = "auto";
/// `[verify] rolling_days` when not set.
pub const DEFAULT_ROLLING_DAYS: u32 = 30;

/// A secret string (the database password): never printed by `Debug`/`Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; only for writing the client defaults file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where and how to reach the MySQL/MariaDB server.
#[derive(Debug, Clone)]
pub struct MysqlTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    /// Used when host is empty or `localhost`; `None` = the client's default.
    pub socket: Option<PathBuf>,
    pub database: String,
    /// Explicit dump command; `None` = `mariadb-dump` if present, else `mysqldump`.
    pub dump_command: Option<String>,
    /// How long the server may stay silent before the run gives up on it.
    pub timeouts: Timeouts,
}

/// Bounds on waiting for the database server: a hung server (stopped,
/// deadlocked, half-dead storage) must not hold the repository lock forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `[mysql] connect_timeout_s`: the whole of one of our own queries
    /// (connection included; a stopped server still accepts connections).
    pub connect: std::time::Duration,
    /// `[mysql] stall_timeout_s`: the longest the dump may go without output.
    pub stall: std::time::Duration,
}

pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 30;
pub const DEFAULT_STALL_TIMEOUT_S: u64 = 600;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_S),
            stall: std::time::Duration::from_secs(DEFAULT_STALL_TIMEOUT_S),
        }
    }
}

/// How the attachment store is frozen while it is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethod {
    Auto,
    None,
    Btrfs,
    Lvm,
}

/// Which symlinks inside `attachment_path` a backup follows
/// (`[attachments] follow_symlinks`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowSymlinks {
    /// Links to directories outside the tree (a fan-out directory moved to
    /// another disk) are captured as if the directory were in place.
    #[default]
    Directories,
    /// Every symlink is recorded as a link, nothing behind it is captured.
    None,
}

/// What the command line may override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`
    pub config: Option<PathBuf>,
    /// `--snapshot METHOD`
    pub snapshot: Option<SnapshotMethod>,
    /// `--repository NAME|DIR|URL`
    pub repository: Option<String>,
    /// The command works on an existing repository only (list, verify,
    /// restore, drill): a missing or unreadable server.cfg means Kopano's
    /// defaults instead of an error.
    pub repository_only: bool,
}

/// The validated configuration every command works from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tool config file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub server_cfg: PathBuf,
    pub config_dir: PathBuf,
    /// The repository this command works on.
    pub repository: RepoSpec,
    /// Its name when it is a `[repositories.NAME]`.
    pub repository_name: Option<String>,
    /// Every configured repository, for `copy --to NAME`.
    pub repositories: Repositories,
    /// `[copy] to`: where the units copy the newest set after a backup.
    pub copy_to: Option<String>,
    pub snapshot: SnapshotMethod,
    /// `[snapshot] lvm_size` in bytes; `None` = the automatic size.
    pub snapshot_lvm_size: Option<u64>,
    pub mysql: MysqlTarget,
    /// `attachment_storage` as configured; may be `auto`.
    pub attachment_storage: String,
    pub attachment_path: PathBuf,
    /// `[attachments] follow_symlinks`.
    pub follow_symlinks: FollowSymlinks,
    /// `[metrics]`, `[hooks]`, `[notify]` as written in the tool config.
    pub metrics: tool::MetricsSection,
    pub hooks: tool::HooksSection,
    pub notify: tool::NotifySection,
    /// `[verify] rolling_days`: each backup re-reads the share of stored
    /// objects that makes every object re-read once per this many backups.
    pub rolling_days: u32,
    /// `[retention]`: what `prune` keeps when its command line names no rule.
    pub retention: crate::retention::Policy,
    /// `[upgrade]`: the services around an upgrade and how to reach them.
    pub upgrade: crate::services::UpgradeSettings,
    /// `attachment_s3_*` with `[s3]` laid over them; used only when the
    /// store turns out to be `s3`.
    pub s3: s3::S3Settings,
    /// `[drill] s3_bucket`: the scratch bucket of drills of s3 sets.
    pub drill_s3_bucket: Option<String>,
    /// `[backup] overlap`: capture the attachment store while the dump
    /// streams (README "What a backup does").
    pub overlap: bool,
}

/// What [`Settings::load`] takes from the process: environment variables
/// and the default file locations, replaceable so tests need not touch
/// the real environment.
struct Environment<'a> {
    var: &'a dyn Fn(&str) -> Option<OsString>,
    tool_config: &'a Path,
    server_cfg: &'a Path,
}

impl Environment<'_> {
    /// An empty variable counts as unset.
    fn path_var(&self, name: &str) -> Option<PathBuf> {
        (self.var)(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

impl Settings {
    /// Reads the tool's TOML file and Kopano's `server.cfg` and merges them
    /// with the command-line overrides.
    pub fn load(o: &Overrides) -> anyhow::Result<Settings> {
        Self::load_with(o, &|name| std::env::var_os(name))
    }

    /// [`Settings::load`] with `env` standing in for `std::env::var_os`.
    pub fn load_with(
        o: &Overrides,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> anyhow::Result<Settings> {
        Self::load_in(
            o,
            &Environment {
                var: env,
                tool_config: Path::new(DEFAULT_TOOL_CONFIG),
                server_cfg: Path::new(DEFAULT_SERVER_CFG),
            },
        )
    }

    fn load_in(o: &Overrides, env: &Environment<'_>) -> anyhow::Result<Settings> {
        let (config_file, tool) = load_tool_config(o, env)?;
        let hint_file = config_file.as_deref().unwrap_or(env.tool_config);

        let (server_cfg, origin) =
            match (&tool.kopano.server_cfg, env.path_var("KOPANO_CONFIG_PATH")) {
                (Some(p), _) => (
                    p.clone(),
                    format!("`[kopano] server_cfg` in {}", hint_file.display()),
                ),
                (None, Some(dir)) => (
                    dir.join("server.cfg"),
                    format!("KOPANO_CONFIG_PATH={}", dir.display()),
                ),
                (None, None) => (env.server_cfg.to_path_buf(), "the default".to_owned()),
            };
        let cfg = match std::fs::File::open(&server_cfg) {
            Err(e)
                if o.repository_only
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                    ) =>
            {
                tracing::info!(
                    "{} not readable ({e}): Kopano's defaults apply",
                    server_cfg.display()
                );
                KopanoCfg::parse_str("", Path::new("/"))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return config_error(format!(
                    "Kopano's server.cfg not found at {} (from {origin}); \
                     set `[kopano] server_cfg = \"/path/to/server.cfg\"` in {}",
                    server_cfg.display(),
                    hint_file.display()
                ));
            }
            _ => KopanoCfg::read(&server_cfg)?,
        };

        let config_dir = match &tool.kopano.config_dir {
            Some(dir) => dir.clone(),
            None => match server_cfg.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        };
        let mysql = mysql_target(&tool, hint_file, &cfg, &server_cfg)?;
        let k = &tool.kopano;
        let snapshot_lvm_size = match &tool.snapshot.lvm_size {
            Some(text) => Some(tool::parse_size(text).ok_or_else(|| {
                ConfigError(format!(
                    "[snapshot] lvm_size = {text:?} is not a size (examples: \"2G\", \"512M\")"
                ))
            })?),
            None => None,
        };
        let rolling_days = match tool.verify.rolling_days {
            Some(0) => {
                return config_error(format!(
                    "{}: [verify] rolling_days must be at least 1",
                    hint_file.display()
                ));
            }
            Some(days) => days,
            None => DEFAULT_ROLLING_DAYS,
        };
        let repositories = Repositories {
            default: tool.repository.clone(),
            named: tool.repositories.clone(),
            file: hint_file.to_path_buf(),
            global_retention: tool
                .retention
                .policy()
                .map_err(|e| ConfigError(format!("{}: {e}", hint_file.display())))?,
        };
        let (repository_name, repository) = match &o.repository {
            Some(arg) => repositories.resolve(arg)?,
            None => (None, repositories.default_spec()?),
        };
        // A named repository prunes with its own policy when it has one.
        let retention_section = repository_name
            .as_ref()
            .and_then(|n| tool.repositories.get(n))
            .and_then(|r| r.retention.as_ref())
            .unwrap_or(&tool.retention);
        let retention = retention_section
            .policy()
            .map_err(|e| ConfigError(format!("{}: {e}", hint_file.display())))?;
        let upgrade = crate::services::UpgradeSettings::from_section(&tool.upgrade)
            .map_err(|e| ConfigError(format!("{}: {e}", hint_file.display())))?;
        let s3 = s3::S3Settings::resolve(&tool.s3, hint_file, &cfg, &server_cfg)?;
        Ok(Settings {
            s3,
            upgrade,
            drill_s3_bucket: tool
                .drill
                .s3_bucket
                .clone()
                .filter(|b| !b.trim().is_empty()),
            overlap: tool.backup.overlap.unwrap_or(true),
            retention,
            rolling_days,
            snapshot_lvm_size,
            config_file,
            config_dir,
            repository,
            repository_name,
            repositories,
            copy_to: tool.copy.to.clone(),
            snapshot: o
                .snapshot
                .or(tool.snapshot.method)
                .unwrap_or(SnapshotMethod::Auto),
            mysql,
            attachment_storage: k.attachment_storage.clone().unwrap_or_else(|| {
                cfg.get_or("attachment_storage", DEFAULT_ATTACHMENT_STORAGE)
                    .to_owned()
            }),
            attachment_path: k
                .attachment_path
                .clone()
                .or_else(|| cfg.get_path("attachment_path"))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ATTACHMENT_PATH)),
            follow_symlinks: tool.attachments.follow_symlinks.unwrap_or_default(),
            server_cfg,
            metrics: tool.metrics.clone(),
            hooks: tool.hooks.clone(),
            notify: tool.notify.clone(),
        })
    }
}

impl Settings {
    /// These settings with `arg` (a name, directory or URL) as the
    /// repository, pruned by its own `[repositories.NAME.retention]` when
    /// it has one (else the top-level `[retention]`).
    pub fn for_repository(&self, arg: &str) -> anyhow::Result<Settings> {
        let (name, spec) = self.repositories.resolve(arg)?;
        let mut out = self.clone();
        if let Some(section) = name
            .as_ref()
            .and_then(|n| self.repositories.named.get(n))
            .and_then(|r| r.retention.as_ref())
        {
            out.retention = section
                .policy()
                .map_err(|e| ConfigError(format!("{}: {e}", self.repositories.file.display())))?;
        } else {
            out.retention = self.repositories.global_retention.clone();
        }
        out.repository = spec;
        out.repository_name = name;
        Ok(out)
    }
}

/// The TOML file that applies and what it says; `None` when the default
/// file does not exist.
fn load_tool_config(
    o: &Overrides,
    env: &Environment<'_>,
) -> anyhow::Result<(Option<PathBuf>, ToolConfig)> {
    let (path, named_by) = match (&o.config, env.path_var("KCBACKUP_CONFIG")) {
        (Some(p), _) => (p.clone(), Some("--config")),
        (None, Some(p)) => (p, Some("KCBACKUP_CONFIG")),
        (None, None) => (env.tool_config.to_path_buf(), None),
    };
    match tool::load(&path) {
        Ok(config) => Ok((Some(path), config)),
        Err(e) if !is_not_found(&e) => Err(e),
        Err(_) => match named_by {
            None => Ok((None, ToolConfig::default())),
            Some(how) => config_error(format!(
                "config file {} (named by {how}) does not exist",
                path.display()
            )),
        },
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::NotFound)
}

/// Kopano's defaults, then `server.cfg`'s `mysql_*`, then `[mysql]`.
fn mysql_target(
    tool: &ToolConfig,
    tool_file: &Path,
    cfg: &KopanoCfg,
    file: &Path,
) -> anyhow::Result<MysqlTarget> {
    let m = &tool.mysql;
    let pick = |over: &Option<String>, name: &str, default: &str| -> anyhow::Result<String> {
        match over {
            Some(v) => Ok(v.clone()),
            None => Ok(cfg_text(cfg, file, name)?.unwrap_or_else(|| default.to_owned())),
        }
    };
    let port = match (m.port, cfg.get("mysql_port")) {
        (Some(0), _) => {
            return config_error(format!(
                "{}: [mysql] port = 0 is not a port",
                tool_file.display()
            ));
        }
        (Some(p), _) => p,
        (None, Some(v)) => match v.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return config_error(format!(
                    "mysql_port = {v:?} in {} is not a port number (1-65535)",
                    file.display()
                ));
            }
        },
        (None, None) => 3306,
    };
    let password = match &m.password_file {
        Some(pf) => read_password_file(pf)?,
        None => Secret::new(pick(&None, "mysql_password", "")?),
    };
    let socket = match &m.socket {
        Some(s) => Some(s.clone()),
        None => cfg.get_path("mysql_socket"),
    }
    .filter(|s| !s.as_os_str().is_empty());
    Ok(MysqlTarget {
        host: pick(&m.host, "mysql_host", "localhost")?,
        port,
        user: pick(&m.user, "mysql_user", "root")?,
        password,
        socket,
        database: pick(&m.database, "mysql_database", "kopano")?,
        dump_command: m.dump_command.clone(),
        timeouts: Timeouts {
            connect: seconds(
                tool_file,
                "connect_timeout_s",
                m.connect_timeout_s,
                DEFAULT_CONNECT_TIMEOUT_S,
            )?,
            stall: seconds(
                tool_file,
                "stall_timeout_s",
                m.stall_timeout_s,
                DEFAULT_STALL_TIMEOUT_S,
            )?,
        },
    })
}

/// A `[mysql] *_timeout_s` value: whole seconds, at least 1 (0 would mean
/// giving up before the server had any chance to answer).
fn seconds(
    tool_file: &Path,
    key: &str,
    value: Option<u64>,
    default: u64,
) -> anyhow::Result<std::time::Duration> {
    match value {
        Some(0) => config_error(format!(
            "{}: [mysql] {key} = 0: the timeout must be at least 1 second",
            tool_file.display()
        )),
        Some(s) => Ok(std::time::Duration::from_secs(s)),
        None => Ok(std::time::Duration::from_secs(default)),
    }
}

/// A `server.cfg` value that is passed on to the MySQL client, where a
/// lossy replacement would only cause a puzzling login failure. The value
/// is never quoted: it may be the password.
fn cfg_text(cfg: &KopanoCfg, file: &Path, name: &str) -> anyhow::Result<Option<String>> {
    match cfg.get_bytes(name).map(std::str::from_utf8) {
        None => Ok(None),
        Some(Ok(s)) => Ok(Some(s.to_owned())),
        Some(Err(_)) => config_error(format!("{name} in {} is not valid UTF-8", file.display())),
    }
}

/// The file's content minus ONE trailing line end, which editors add.
/// Errors name the file but never show its content.
pub fn read_password_file(path: &Path) -> anyhow::Result<Secret> {
    read_secret_file(path, "[mysql] password_file")
}

/// [`read_password_file`] for any setting `key` that names a secret file.
pub fn read_secret_file(path: &Path, key: &str) -> anyhow::Result<Secret> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError(format!("cannot read {key} {}: {e}", path.display())))?;
    let Ok(mut text) = String::from_utf8(bytes) else {
        return config_error(format!("{key} {} is not valid UTF-8", path.display()));
    };
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests;
