//! Configuration: the tool's own TOML file plus Kopano's `server.cfg`,
//! validated into one [`Settings`] that the rest of the program uses.

pub mod kopano_cfg;
pub mod tool;

use std::fmt;
use std::path::PathBuf;

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

/// What the command line may override.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`
    pub config: Option<PathBuf>,
    /// `--snapshot METHOD`
    pub snapshot: Option<SnapshotMethod>,
    /// `--repository DIR`
    pub repository: Option<PathBuf>,
}

/// The validated configuration every command works from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tool config file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub server_cfg: PathBuf,
    pub config_dir: PathBuf,
    pub repository: PathBuf,
    pub snapshot: SnapshotMethod,
    pub mysql: MysqlTarget,
    /// `attachment_storage` as configured; may be `auto`.
    pub attachment_storage: String,
    pub attachment_path: PathBuf,
}
// STUB-BEGIN (replaced by the settings branch)
impl Settings {
    pub fn load(_o: &Overrides) -> anyhow::Result<Settings> {
        anyhow::bail!("stub")
    }
}
// STUB-END
