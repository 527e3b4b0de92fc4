//! The S3 attachment store's settings: Kopano's `attachment_s3_*` keys in
//! server.cfg (kopano-facts.md, section 3), with `[s3]` of kcbackup.toml
//! laid over them. Checked only when the store is `s3`.

use std::path::Path;
use std::time::Duration;

use super::kopano_cfg::KopanoCfg;
use super::tool::S3Section;
use super::{Secret, read_secret_file};
use crate::error::{ConfigError, config_error};
use crate::s3::{Endpoint, S3Config, kopano_path_style};

/// `[s3] downloads` when not set.
pub const DEFAULT_DOWNLOADS: usize = 4;

/// Everything needed to reach the bucket, plus how to capture it.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `[s3] endpoint`, else `attachment_s3_hostname` (may be `host:port`).
    pub hostname: String,
    /// `attachment_s3_protocol` (Kopano's default `https`); not used when
    /// `hostname` is a URL.
    pub protocol: String,
    pub path_style: bool,
    /// As configured; empty signs as [`crate::s3::DEFAULT_REGION`].
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret: Secret,
    /// Where the settings came from, for messages (never their values).
    pub origin: String,
    pub downloads: usize,
    pub timeout: Duration,
    /// `[s3] retries`: tries after a failed request, with backoff.
    pub retries: usize,
}

impl S3Settings {
    pub fn resolve(
        section: &S3Section,
        tool_file: &Path,
        cfg: &KopanoCfg,
        server_cfg: &Path,
    ) -> anyhow::Result<S3Settings> {
        let get = |over: &Option<String>, key: &str, default: &str| match over {
            Some(v) => v.trim().to_owned(),
            None => cfg.get_or(key, default).trim().to_owned(),
        };
        let secret = match &section.secret_access_key_file {
            Some(file) => read_secret_file(file, "[s3] secret_access_key_file")?,
            None => match cfg.get_bytes("attachment_s3_secretaccesskey") {
                None => Secret::default(),
                Some(bytes) => match std::str::from_utf8(bytes) {
                    Ok(text) => Secret::new(text),
                    Err(_) => {
                        return config_error(format!(
                            "attachment_s3_secretaccesskey in {} is not valid UTF-8",
                            server_cfg.display()
                        ));
                    }
                },
            },
        };
        let downloads = match section.downloads {
            Some(0) => {
                return config_error(format!(
                    "{}: [s3] downloads must be at least 1",
                    tool_file.display()
                ));
            }
            Some(n) => n,
            None => DEFAULT_DOWNLOADS,
        };
        let timeout = match section.timeout_s {
            Some(0) => {
                return config_error(format!(
                    "{}: [s3] timeout_s must be at least 1",
                    tool_file.display()
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => crate::s3::DEFAULT_TIMEOUT,
        };
        Ok(S3Settings {
            hostname: get(&section.endpoint, "attachment_s3_hostname", ""),
            protocol: cfg
                .get_or("attachment_s3_protocol", "https")
                .trim()
                .to_owned(),
            path_style: section.path_style.unwrap_or_else(|| {
                kopano_path_style(cfg.get_or("attachment_s3_uristyle", "virtualhost"))
            }),
            region: get(&section.region, "attachment_s3_region", ""),
            bucket: get(&section.bucket, "attachment_s3_bucketname", ""),
            access_key_id: get(&section.access_key_id, "attachment_s3_accesskeyid", ""),
            secret,
            origin: format!(
                "{} and [s3] in {}",
                server_cfg.display(),
                tool_file.display()
            ),
            downloads,
            timeout,
            retries: section.retries.unwrap_or(crate::s3::DEFAULT_RETRIES),
        })
    }

    /// The client's configuration; a config error (exit 2) naming what is
    /// missing when the store is `s3` but the settings are incomplete.
    pub fn client_config(&self) -> Result<S3Config, ConfigError> {
        let endpoint = Endpoint::parse(&self.hostname, Some(&self.protocol))
            .map_err(|e| ConfigError(format!("{} (from {})", e.0, self.origin)))?;
        for (value, what) in [
            (
                &self.bucket,
                "the bucket (attachment_s3_bucketname or [s3] bucket)",
            ),
            (
                &self.access_key_id,
                "the access key id (attachment_s3_accesskeyid or [s3] access_key_id)",
            ),
        ] {
            if value.is_empty() {
                return Err(ConfigError(format!(
                    "attachment_storage is s3 but {what} is not set (from {})",
                    self.origin
                )));
            }
        }
        let mut config = S3Config::new(
            endpoint,
            &self.region,
            self.path_style,
            &self.access_key_id,
            self.secret.clone(),
        );
        config.timeout = self.timeout;
        config.retries = self.retries;
        Ok(config)
    }
}
