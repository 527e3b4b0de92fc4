//! Where an S3 server is and how to sign for it: from Kopano's
//! `attachment_s3_*` settings or from an endpoint URL.

use std::time::Duration;

use url::Url;

use crate::error::ConfigError;
use crate::settings::Secret;

/// The region kcbackup signs with when none is configured. Kopano itself
/// signs with an empty region then, which most servers refuse; they all
/// accept `us-east-1` (kopano-facts.md, section 3).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Time limit of connecting, and of every wait for a response or for the
/// next bytes of a body: a hung server fails the request instead of the run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a failed request is tried again.
pub const DEFAULT_RETRIES: usize = 4;

/// The server: scheme, host and port (and a path prefix, rarely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(Url);

impl Endpoint {
    /// An endpoint URL (`http://127.0.0.1:8333`), or Kopano's form: a
    /// hostname, `host:port` allowed, with a protocol (`https` when it
    /// starts with `https`, else `http`, as Kopano decides).
    pub fn parse(hostname: &str, protocol: Option<&str>) -> Result<Endpoint, ConfigError> {
        let hostname = hostname.trim();
        if hostname.is_empty() {
            return Err(ConfigError(
                "the S3 endpoint is empty (attachment_s3_hostname or [s3] endpoint)".into(),
            ));
        }
        let text = if hostname.contains("://") {
            hostname.to_owned()
        } else {
            let https = protocol.is_none_or(|p| p.trim().starts_with("https"));
            format!("{}://{hostname}", if https { "https" } else { "http" })
        };
        let url = Url::parse(&text)
            .map_err(|e| ConfigError(format!("the S3 endpoint {hostname:?} is not valid: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError(format!(
                "the S3 endpoint {hostname:?} must be http(s)://host[:port]"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError(
                "the S3 endpoint must not carry credentials; use the access key settings".into(),
            ));
        }
        Ok(Endpoint(url))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// Shown in messages and manifests: `http://host:port`, never credentials.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

/// Everything a [`crate::s3::Client`] needs.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Endpoint,
    /// As configured; empty means [`DEFAULT_REGION`] for signing.
    pub region: String,
    /// Path style (`host/bucket/key`) rather than virtual host
    /// (`bucket.host/key`).
    pub path_style: bool,
    pub access_key_id: String,
    pub secret: Secret,
    pub timeout: Duration,
    pub retries: usize,
}

impl S3Config {
    pub fn new(
        endpoint: Endpoint,
        region: &str,
        path_style: bool,
        access_key_id: &str,
        secret: Secret,
    ) -> S3Config {
        S3Config {
            endpoint,
            region: region.trim().to_owned(),
            path_style,
            access_key_id: access_key_id.trim().to_owned(),
            secret,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }

    /// The region requests are signed with.
    pub fn signing_region(&self) -> &str {
        if self.region.is_empty() {
            DEFAULT_REGION
        } else {
            &self.region
        }
    }
}

/// Kopano's `attachment_s3_uristyle`: path style when it starts with `path`.
pub fn kopano_path_style(uristyle: &str) -> bool {
    uristyle.trim().starts_with("path")
}
