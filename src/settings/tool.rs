//! The tool's own TOML configuration (`/etc/kcbackup/kcbackup.toml`).
//! Unknown keys are errors, so that a typo never silently falls back.
//! Relative paths are resolved against the TOML file's folder on loading.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::{FollowSymlinks, SnapshotMethod};
use crate::error::ConfigError;

/// The whole file; every section and key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolConfig {
    pub kopano: KopanoSection,
    pub repository: RepositorySection,
    /// `[repositories.NAME]`: further repositories, chosen with
    /// `--repository NAME` or named by `[copy] to`.
    pub repositories: std::collections::BTreeMap<String, RepositorySection>,
    pub copy: CopySection,
    pub snapshot: SnapshotSection,
    pub mysql: MysqlSection,
    pub attachments: AttachmentsSection,
    pub metrics: MetricsSection,
    pub hooks: HooksSection,
    pub notify: NotifySection,
    pub verify: VerifySection,
    pub retention: RetentionSection,
    pub upgrade: UpgradeSection,
    pub backup: BackupSection,
    pub drill: DrillSection,
    pub s3: S3Section,
}

/// `[s3]`: overrides of server.cfg's `attachment_s3_*` for an `s3`
/// attachment store, and how it is captured. The secret only ever comes
/// from a file (or from server.cfg), never from this file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// `http(s)://host[:port]`, or a hostname as Kopano takes it.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub path_style: Option<bool>,
    /// Objects downloaded at once (default 4).
    pub downloads: Option<usize>,
    /// Time limit of every wait on the server, in seconds (default 60).
    pub timeout_s: Option<u64>,
    /// Tries after a failed S3 request, with backoff (default 4).
    pub retries: Option<usize>,
}

/// `[drill]`: where a drill restores what is not on this machine.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrillSection {
    /// A bucket for drills only, on the endpoint of the s3 attachment
    /// store: a drill of an s3 set restores its objects there, and empties
    /// it before and after. Without it, objects go to the scratch directory.
    pub s3_bucket: Option<String>,
}

/// `[backup]`: how the phases of a backup are scheduled.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    /// Capture the attachment store while the dump streams (default true);
    /// false runs them one after the other (less memory and I/O at once).
    pub overlap: Option<bool>,
}

/// `[upgrade]`: which services `kcbackup upgrade prepare` stops (and
/// `finish` starts) and how; see [`crate::services`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeSection {
    pub mta: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub optional_services: Option<Vec<String>>,
    pub web_servers: Option<Vec<String>>,
    pub service_manager: Option<crate::services::ManagerKind>,
    /// The argv template of `service_manager = "command"`.
    pub command: Option<Vec<String>>,
    pub stop_timeout_s: Option<u64>,
    /// Where the new packages' example configs are (`upgrade finish`).
    pub example_config_dir: Option<PathBuf>,
}

/// `[retention]`: what `kcbackup prune` keeps when the command line names
/// no rule. Each key has its own default (see [`crate::retention::Policy::recommended`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// A duration such as `"14d"` or `"1y6m"`; `"0d"` keeps nothing by age.
    pub keep_within: Option<String>,
    pub keep_tags: Option<Vec<String>>,
    pub keep_incomplete: Option<u32>,
}

impl RetentionSection {
    /// The policy this section describes, each missing key at its default.
    pub fn policy(&self) -> Result<crate::retention::Policy, String> {
        let d = crate::retention::Policy::recommended();
        let keep_within = match &self.keep_within {
            Some(text) => Some(
                crate::retention::Within::parse(text)
                    .map_err(|e| format!("[retention] keep_within = {e}"))?,
            )
            .filter(|w| !w.is_zero()),
            None => d.keep_within,
        };
        Ok(crate::retention::Policy {
            keep_last: self.keep_last.unwrap_or(d.keep_last),
            keep_hourly: self.keep_hourly.unwrap_or(d.keep_hourly),
            keep_daily: self.keep_daily.unwrap_or(d.keep_daily),
            keep_weekly: self.keep_weekly.unwrap_or(d.keep_weekly),
            keep_monthly: self.keep_monthly.unwrap_or(d.keep_monthly),
            keep_yearly: self.keep_yearly.unwrap_or(d.keep_yearly),
            keep_within,
            keep_tags: self.keep_tags.clone().unwrap_or(d.keep_tags),
            keep_incomplete: self.keep_incomplete.unwrap_or(d.keep_incomplete),
        })
    }
}

/// `[attachments]`: how the attachment store is captured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsSection {
    /// Which symlinks inside `attachment_path` are followed (default
    /// `directories`: links to directories outside the tree).
    pub follow_symlinks: Option<FollowSymlinks>,
}

/// `[verify]`: how backups re-check objects they reuse without reading.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySection {
    /// Every stored object is re-read at least once per this many backups.
    pub rolling_days: Option<u32>,
}

/// `[kopano]`: where Kopano's configuration and attachments are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KopanoSection {
    pub server_cfg: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub attachment_path: Option<PathBuf>,
    pub attachment_storage: Option<String>,
}

/// `[repository]` (the default) and each `[repositories.NAME]`: a local
/// `path`, or an S3 `url` with its connection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositorySection {
    pub path: Option<PathBuf>,
    /// `s3://bucket/prefix`
    pub url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// The secret key is never written in this file, only where it is.
    pub secret_access_key_file: Option<PathBuf>,
    /// Default true: most self-hosted services want the bucket in the path.
    pub path_style: Option<bool>,
    /// Parallel uploads and downloads (default 4).
    pub parallel: Option<usize>,
    /// Seconds one S3 request may stay unanswered (default 60).
    pub timeout_s: Option<u64>,
    /// Tries after a failed S3 request, with backoff (default 4).
    pub retries: Option<usize>,
    /// What `prune --repository NAME` keeps when its command line names
    /// no rule; the top-level `[retention]` when absent.
    pub retention: Option<RetentionSection>,
    /// `"age"`: everything stored is encrypted (src/repo/storage/encrypted.rs).
    pub encryption: Option<String>,
    /// The age public keys (`age1...`, one a line): enough to write.
    pub recipients_file: Option<PathBuf>,
    /// The age private key (`AGE-SECRET-KEY-1...`): needed to read.
    pub identity_file: Option<PathBuf>,
}

/// `[copy]`: where the systemd units copy the newest set after the
/// nightly backup (`kcbackup copy latest --to NAME`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CopySection {
    pub to: Option<String>,
}

/// `[snapshot]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSection {
    pub method: Option<SnapshotMethod>,
    /// LVM snapshot size, e.g. `"2G"`, `"512M"` or bytes.
    pub lvm_size: Option<String>,
}

/// Parses a size like `2G`, `512M`, `1.5GiB`, `4096` (binary units).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = num * mult as f64;
    (bytes >= 1.0).then_some(bytes as u64)
}

/// `[mysql]`: overrides of what `server.cfg` says. There is deliberately no
/// `password` key: secrets go in `password_file`, out of this file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// An empty string means "the client's default", even if `server.cfg`
    /// names a socket.
    pub socket: Option<PathBuf>,
    pub database: Option<String>,
    /// A command name looked up on `PATH`, so it is not resolved like a path.
    pub dump_command: Option<String>,
    /// Seconds one of kcbackup's own queries may take, connecting included
    /// (default 30).
    pub connect_timeout_s: Option<u64>,
    /// Seconds the dump may produce no output before it is killed (default 600).
    pub stall_timeout_s: Option<u64>,
}

/// `[metrics]`: where the node_exporter textfile collector reads
/// `kcbackup_<operation>.prom` (unset: no metrics files).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    pub textfile_dir: Option<PathBuf>,
}

/// One hook: an argv list, or a table with its own time limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum HookSpec {
    Argv(Vec<String>),
    Table(HookTable),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookTable {
    pub command: Vec<String>,
    pub timeout_seconds: Option<u64>,
}

impl HookSpec {
    pub fn argv(&self) -> &[String] {
        match self {
            HookSpec::Argv(argv) => argv,
            HookSpec::Table(t) => &t.command,
        }
    }

    pub fn timeout_seconds(&self) -> Option<u64> {
        match self {
            HookSpec::Argv(_) => None,
            HookSpec::Table(t) => t.timeout_seconds,
        }
    }
}

/// `[hooks]`: commands run around operations (argv lists, no shell).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksSection {
    /// The time limit of a hook without its own (default 300).
    pub timeout_seconds: Option<u64>,
    pub before_backup: Option<HookSpec>,
    pub after_backup: Option<HookSpec>,
    pub before_restore: Option<HookSpec>,
    pub after_restore: Option<HookSpec>,
    pub before_drill: Option<HookSpec>,
    pub after_drill: Option<HookSpec>,
    pub on_failure: Option<HookSpec>,
}

/// `[notify]`: healthchecks-style pings (`/start`, then `/<exit code>`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySection {
    /// Pinged by `backup`.
    pub ping_url: Option<String>,
    /// Pinged by `drill` (a check of its own: it runs weekly).
    pub drill_ping_url: Option<String>,
    /// Per request (default 10).
    pub timeout_seconds: Option<u64>,
}

/// Reads and validates the TOML file at `path`. A missing file is an
/// `io::Error` of kind `NotFound` in the error chain.
pub fn load(path: &Path) -> anyhow::Result<ToolConfig> {
    let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    // TOML is UTF-8 by definition; a Latin-1 comment is a config mistake.
    let text = String::from_utf8(bytes).map_err(|e| {
        let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError(format!(
            "{}: line {line} is not valid UTF-8 (TOML files must be UTF-8)",
            path.display()
        ))
    })?;
    let mut config = parse_str(&text, path)?;
    config.resolve_relative(path.parent().unwrap_or(Path::new("")));
    Ok(config)
}

/// Parses `text`; `path` is only used to name the file in errors.
pub fn parse_str(text: &str, path: &Path) -> anyhow::Result<ToolConfig> {
    let config: ToolConfig =
        toml::from_str(text).map_err(|e| ConfigError(describe_toml_error(text, path, &e)))?;
    config.check_not_empty(path)?;
    Ok(config)
}

/// `file: line L, column C: message`, without the source excerpt toml
/// prints by default: the offending line could hold a password someone put
/// where it does not belong.
fn describe_toml_error(text: &str, path: &Path, e: &toml::de::Error) -> String {
    let position = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" line {line}, column {column}:")
    });
    format!(
        "{}:{} {}",
        path.display(),
        position.unwrap_or_default(),
        e.message().trim_end()
    )
}

impl ToolConfig {
    fn paths_mut(&mut self) -> [&mut Option<PathBuf>; 9] {
        [
            &mut self.kopano.server_cfg,
            &mut self.kopano.config_dir,
            &mut self.kopano.attachment_path,
            &mut self.repository.path,
            &mut self.mysql.password_file,
            &mut self.mysql.socket,
            &mut self.metrics.textfile_dir,
            &mut self.upgrade.example_config_dir,
            &mut self.s3.secret_access_key_file,
        ]
    }

    fn resolve_relative(&mut self, base: &Path) {
        let named = self
            .repositories
            .values_mut()
            .flat_map(|r| [&mut r.path, &mut r.secret_access_key_file]);
        let default = [&mut self.repository.secret_access_key_file];
        let all: Vec<&mut Option<PathBuf>> = named.chain(default).collect();
        for path in all.into_iter().flatten() {
            if !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
        for path in self.paths_mut().into_iter().flatten() {
            // Empty stays empty: for `socket` it has a meaning of its own.
            if !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
    }

    /// An empty path would silently mean "the current folder".
    fn check_not_empty(&self, file: &Path) -> anyhow::Result<()> {
        let keys = [
            ("[kopano] server_cfg", &self.kopano.server_cfg),
            ("[kopano] config_dir", &self.kopano.config_dir),
            ("[kopano] attachment_path", &self.kopano.attachment_path),
            ("[repository] path", &self.repository.path),
            ("[mysql] password_file", &self.mysql.password_file),
            ("[metrics] textfile_dir", &self.metrics.textfile_dir),
            (
                "[s3] secret_access_key_file",
                &self.s3.secret_access_key_file,
            ),
        ];
        if let Some(name) = self.repositories.keys().find(|n| !super::repos::is_name(n)) {
            return Err(ConfigError(format!(
                "{}: [repositories.{name:?}]: a repository name is letters, digits, '-' and '_'",
                file.display()
            ))
            .into());
        }
        for (key, value) in keys {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(
                    ConfigError(format!("{}: {key} must not be empty", file.display())).into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Exit, exit_for};

    fn parse(text: &str) -> anyhow::Result<ToolConfig> {
        parse_str(text, Path::new("/etc/kcbackup/kcbackup.toml"))
    }

    #[test]
    fn empty_file_means_all_defaults() {
        assert_eq!(parse("").unwrap(), ToolConfig::default());
    }

    #[test]
    fn all_keys_parse() {
        let c = parse(
            r#"
            [kopano]
            server_cfg = "/k/server.cfg"
            config_dir = "/k"
            attachment_path = "/att"
            attachment_storage = "files_v2"
            [repository]
            path = "/repo"
            [snapshot]
            method = "lvm"
            [mysql]
            host = "db"
            port = 3307
            user = "kopano"
            password_file = "/pw"
            socket = "/run/mysqld.sock"
            database = "kc"
            dump_command = "mysqldump"
            connect_timeout_s = 5
            stall_timeout_s = 120
            "#,
        )
        .unwrap();
        assert_eq!(c.kopano.attachment_storage.as_deref(), Some("files_v2"));
        assert_eq!(c.snapshot.method, Some(SnapshotMethod::Lvm));
        assert_eq!(c.mysql.port, Some(3307));
        assert_eq!(c.mysql.dump_command.as_deref(), Some("mysqldump"));
        assert_eq!(c.mysql.connect_timeout_s, Some(5));
        assert_eq!(c.mysql.stall_timeout_s, Some(120));
        assert_eq!(c.repository.path, Some(PathBuf::from("/repo")));
    }

    /// The shipped conffile keeps every key commented with its default:
    /// uncommented, the documented defaults must parse and mean the same.
    #[test]
    fn the_shipped_config_uncommented_parses_with_its_documented_defaults() {
        let text: String = include_str!("../../packaging/kcbackup.toml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if is_key_line(rest) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&text).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            c.attachments.follow_symlinks,
            Some(FollowSymlinks::Directories)
        );
        assert_eq!(c.verify.rolling_days, Some(30));
        assert_eq!(c.mysql.connect_timeout_s, Some(30));
        assert_eq!(c.mysql.stall_timeout_s, Some(600));
        // Every [retention] key is shown, each at its default.
        let r = &c.retention;
        assert!(
            r.keep_last.is_some()
                && r.keep_hourly.is_some()
                && r.keep_daily.is_some()
                && r.keep_weekly.is_some()
                && r.keep_monthly.is_some()
                && r.keep_yearly.is_some()
                && r.keep_within.is_some()
                && r.keep_tags.is_some()
                && r.keep_incomplete.is_some(),
            "{r:?}"
        );
        assert_eq!(r.policy(), Ok(crate::retention::Policy::recommended()));
        // Every [upgrade] key is shown, each at its default.
        let defaults = crate::services::UpgradeSettings::default();
        let u = crate::services::UpgradeSettings::from_section(&c.upgrade)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u, defaults);
        assert_eq!(
            (u.manager.clone(), c.upgrade.command.is_some()),
            (crate::services::Manager::Auto, true),
        );
        assert!(
            c.upgrade.mta.is_some()
                && c.upgrade.services.is_some()
                && c.upgrade.optional_services.is_some()
                && c.upgrade.web_servers.is_some()
                && c.upgrade.service_manager.is_some()
                && c.upgrade.stop_timeout_s.is_some()
                && c.upgrade.example_config_dir.is_some(),
            "{:?}",
            c.upgrade
        );
        assert_eq!(
            ToolConfig::default().retention.policy(),
            Ok(crate::retention::Policy::recommended())
        );
    }

    #[test]
    fn retention_keys_override_one_by_one_and_a_bad_duration_is_named() {
        let c = parse("[retention]\nkeep_daily = 14\nkeep_within = \"1y6m\"\nkeep_tags = []\n")
            .unwrap();
        let p = c.retention.policy().unwrap();
        assert_eq!(p.keep_daily, 14);
        assert_eq!(p.keep_weekly, 4, "unset keys keep their defaults");
        assert_eq!(
            p.keep_within.map(|w| w.to_string()).as_deref(),
            Some("1y6m")
        );
        assert!(p.keep_tags.is_empty());
        let c = parse("[retention]\nkeep_within = \"two weeks\"\n").unwrap();
        let err = c.retention.policy().unwrap_err();
        assert!(
            err.contains("keep_within") && err.contains("two weeks"),
            "{err}"
        );
        assert!(parse("[retention]\nkeep_dayly = 3\n").is_err());
    }

    fn is_key_line(text: &str) -> bool {
        text.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }

    #[test]
    fn follow_symlinks_takes_directories_or_none_only() {
        let c = parse("[attachments]\nfollow_symlinks = \"none\"\n").unwrap();
        assert_eq!(c.attachments.follow_symlinks, Some(FollowSymlinks::None));
        let c = parse("[attachments]\nfollow_symlinks = \"directories\"\n").unwrap();
        assert_eq!(
            c.attachments.follow_symlinks,
            Some(FollowSymlinks::Directories)
        );
        let err = parse("[attachments]\nfollow_symlinks = \"all\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("all"), "{err:#}");
        assert_eq!(exit_for(&err), Exit::Usage);
        let err = parse("[attachments]\nfollow = \"none\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("follow"), "{err:#}");
    }

    #[test]
    fn unknown_key_is_named_with_file_and_line() {
        let err = parse("[repository]\nreposity = \"/x\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("reposity"), "{msg}");
        assert!(msg.contains("/etc/kcbackup/kcbackup.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert_eq!(exit_for(&err), Exit::Usage);
    }

    #[test]
    fn unknown_section_is_named() {
        let msg = format!("{:#}", parse("[reposity]\npath = \"/x\"\n").unwrap_err());
        assert!(msg.contains("reposity"), "{msg}");
    }

    #[test]
    fn unknown_snapshot_method_is_an_error() {
        let msg = format!("{:#}", parse("[snapshot]\nmethod = \"zfs\"\n").unwrap_err());
        assert!(msg.contains("zfs"), "{msg}");
    }

    #[test]
    fn misplaced_password_is_named_but_not_echoed() {
        let msg = format!(
            "{:#}",
            parse("[mysql]\npassword = \"hunter2\"\n").unwrap_err()
        );
        assert!(msg.contains("password"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn empty_path_is_an_error() {
        let msg = format!("{:#}", parse("[repository]\npath = \"\"\n").unwrap_err());
        assert!(msg.contains("[repository] path"), "{msg}");
    }

    #[test]
    fn relative_paths_are_resolved_against_the_file_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kcbackup.toml");
        let text = "[repository]\npath = \"repo\"\n[mysql]\nsocket = \"\"\n\
                    password_file = \"/abs/pw\"\ndump_command = \"bin/dump\"\n";
        std::fs::write(&file, text).unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.repository.path, Some(dir.path().join("repo")));
        assert_eq!(c.mysql.password_file, Some(PathBuf::from("/abs/pw")));
        assert_eq!(c.mysql.socket, Some(PathBuf::new()));
        assert_eq!(c.mysql.dump_command.as_deref(), Some("bin/dump"));
    }

    #[test]
    fn missing_file_is_not_found_in_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("none.toml")).unwrap_err();
        let io = err.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
