//! Which repository a command works on: `[repository]` (the default), the
//! named `[repositories.NAME]`, or `--repository NAME|PATH|URL`, resolved
//! into a [`RepoSpec`] (a local directory or an S3 bucket and prefix).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::tool::RepositorySection;
use super::{DEFAULT_REPOSITORY, Secret};
use crate::error::{ConfigError, config_error};

/// Parallel transfers to and from object storage when not configured.
pub const DEFAULT_PARALLEL: usize = 4;
/// The most parallel transfers a repository may ask for.
pub const MAX_PARALLEL: usize = 64;

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSpec {
    Local(PathBuf),
    S3(S3Repo),
    /// Either of the others with everything stored encrypted (`encryption = "age"`).
    Encrypted(Box<RepoSpec>, EncryptionSpec),
}

/// `encryption = "age"`: where the keys are. They are read when the
/// repository is opened (src/repo/storage/encrypted.rs), never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionSpec {
    /// Age public keys: enough to write.
    pub recipients_file: Option<PathBuf>,
    /// The age private key: needed to read.
    pub identity_file: Option<PathBuf>,
    /// The config section, for messages (`[repositories.offsite]`).
    pub what: String,
}

/// A repository on S3-compatible object storage: every key below `prefix`
/// in `bucket`. Its Debug never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Repo {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// `http(s)://host:port` of the service.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Bucket in the path (`endpoint/bucket/key`) rather than in the host name.
    pub path_style: bool,
    /// Parallel uploads and downloads.
    pub parallel: usize,
    /// How long one request may stay unanswered.
    pub timeout: std::time::Duration,
    /// Tries again after a failed request.
    pub retries: usize,
}

impl S3Repo {
    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            p => format!("s3://{}/{p}", self.bucket),
        }
    }
}

impl RepoSpec {
    /// The local directory, for a local repository.
    pub fn local(&self) -> Option<&Path> {
        match self {
            RepoSpec::Local(p) => Some(p),
            RepoSpec::S3(_) => None,
            RepoSpec::Encrypted(inner, _) => inner.local(),
        }
    }

    /// The S3 repository, encrypted or not.
    pub fn s3(&self) -> Option<&S3Repo> {
        match self {
            RepoSpec::S3(s) => Some(s),
            RepoSpec::Local(_) => None,
            RepoSpec::Encrypted(inner, _) => inner.s3(),
        }
    }

    /// Whether what is stored is encrypted.
    pub fn encrypted(&self) -> bool {
        matches!(self, RepoSpec::Encrypted(..))
    }

    /// Whether this is the same repository as `other` (same directory, or
    /// same bucket and prefix on the same endpoint).
    pub fn same_place(&self, other: &RepoSpec) -> bool {
        match (self, other) {
            (RepoSpec::Encrypted(a, _), b) | (b, RepoSpec::Encrypted(a, _)) => a.same_place(b),
            (RepoSpec::Local(a), RepoSpec::Local(b)) => {
                let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                canon(a) == canon(b)
            }
            (RepoSpec::S3(a), RepoSpec::S3(b)) => {
                a.endpoint == b.endpoint && a.bucket == b.bucket && a.prefix == b.prefix
            }
            _ => false,
        }
    }
}

impl fmt::Display for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoSpec::Local(p) => write!(f, "{}", p.display()),
            RepoSpec::S3(s) => f.write_str(&s.url()),
            RepoSpec::Encrypted(inner, _) => inner.fmt(f),
        }
    }
}

/// Splits `s3://bucket/prefix` into bucket and prefix.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(format!("{url:?} is not an s3:// URL"));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(format!(
            "{url:?}: {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '-', '.')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
    {
        return Err(format!("{url:?}: the key prefix {prefix:?} is not usable"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// The named repositories of the config plus how to turn a `--repository`
/// value (or `[copy] to`) into a [`RepoSpec`]. Secrets are read only for
/// the repository that is used.
#[derive(Debug, Clone)]
pub struct Repositories {
    pub default: RepositorySection,
    pub named: BTreeMap<String, RepositorySection>,
    /// The config file, for messages.
    pub file: PathBuf,
    /// The top-level `[retention]`, for a repository without its own.
    pub global_retention: crate::retention::Policy,
}

/// Whether `name` can be a repository name (and so is not taken for a path).
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Repositories {
    /// The repository `arg` names: a configured name, an `s3://` URL
    /// (connection settings from the named repository of that bucket, if
    /// any), or a directory. A bare word that is neither a name nor an
    /// existing directory is refused: a misspelt name must not become a
    /// new repository in the current directory.
    pub fn resolve(&self, arg: &str) -> anyhow::Result<(Option<String>, RepoSpec)> {
        if let Some(section) = self.named.get(arg) {
            let what = format!("[repositories.{arg}]");
            return Ok((Some(arg.to_owned()), self.spec(section, &what)?));
        }
        if arg.starts_with("s3://") {
            let (bucket, prefix) = parse_s3_url(arg).map_err(ConfigError)?;
            let default_name = "repository".to_owned();
            let same_bucket = self
                .named
                .iter()
                .chain(std::iter::once((&default_name, &self.default)))
                .find(|(_, s)| {
                    s.url
                        .as_deref()
                        .and_then(|u| parse_s3_url(u).ok())
                        .is_some_and(|(b, _)| b == bucket)
                });
            let Some((name, section)) = same_bucket else {
                return config_error(format!(
                    "--repository {arg}: no [repositories.NAME] in {} is on bucket {bucket:?}, \
                     so its endpoint and credentials are unknown; configure one there",
                    self.file.display()
                ));
            };
            let mut section = section.clone();
            section.url = Some(format!("s3://{bucket}/{prefix}"));
            let what = format!("--repository {arg} (connection of [repositories.{name}])");
            return Ok((None, self.spec(&section, &what)?));
        }
        if is_name(arg) && !Path::new(arg).is_dir() {
            let known: Vec<&str> = self.named.keys().map(String::as_str).collect();
            return config_error(format!(
                "no repository named {arg:?} in {} (configured: {}); \
                 a directory is written with a '/', such as ./{arg}",
                self.file.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok((None, RepoSpec::Local(PathBuf::from(arg))))
    }

    /// The default repository (`[repository]`, else /var/lib/kcbackup).
    pub fn default_spec(&self) -> anyhow::Result<RepoSpec> {
        if self.default.path.is_none() && self.default.url.is_none() {
            return Ok(RepoSpec::Local(PathBuf::from(DEFAULT_REPOSITORY)));
        }
        self.spec(&self.default, "[repository]")
    }

    fn spec(&self, s: &RepositorySection, what: &str) -> anyhow::Result<RepoSpec> {
        let plain = self.plain_spec(s, what)?;
        let file = self.file.display();
        match s.encryption.as_deref() {
            None => {
                if s.recipients_file.is_some() || s.identity_file.is_some() {
                    return config_error(format!(
                        "{file}: {what} recipients_file and identity_file need encryption = \"age\""
                    ));
                }
                Ok(plain)
            }
            Some("age") => {
                if s.recipients_file.is_none() && s.identity_file.is_none() {
                    return config_error(format!(
                        "{file}: {what} encryption = \"age\" needs recipients_file (to write) \
                         and/or identity_file (to read)"
                    ));
                }
                Ok(RepoSpec::Encrypted(
                    Box::new(plain),
                    EncryptionSpec {
                        recipients_file: s.recipients_file.clone(),
                        identity_file: s.identity_file.clone(),
                        what: what.to_owned(),
                    },
                ))
            }
            Some(other) => config_error(format!(
                "{file}: {what} encryption = {other:?}: the only one is \"age\""
            )),
        }
    }

    fn plain_spec(&self, s: &RepositorySection, what: &str) -> anyhow::Result<RepoSpec> {
        let file = self.file.display();
        let parallel = match s.parallel {
            Some(n) if n == 0 || n > MAX_PARALLEL => {
                return config_error(format!(
                    "{file}: {what} parallel = {n}: must be 1 to {MAX_PARALLEL}"
                ));
            }
            Some(n) => n,
            None => DEFAULT_PARALLEL,
        };
        match (&s.path, &s.url) {
            (Some(_), Some(_)) => config_error(format!(
                "{file}: {what} has both path and url: a repository is one or the other"
            )),
            (None, None) => config_error(format!(
                "{file}: {what} needs path = \"/dir\" or url = \"s3://bucket/prefix\""
            )),
            (Some(path), None) => {
                let s3_keys = [
                    ("endpoint", s.endpoint.is_some()),
                    ("region", s.region.is_some()),
                    ("access_key_id", s.access_key_id.is_some()),
                    ("secret_access_key_file", s.secret_access_key_file.is_some()),
                    ("path_style", s.path_style.is_some()),
                    ("timeout_s", s.timeout_s.is_some()),
                    ("retries", s.retries.is_some()),
                ];
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return config_error(format!(
                        "{file}: {what} {key} is for url = \"s3://...\" repositories, not path"
                    ));
                }
                Ok(RepoSpec::Local(path.clone()))
            }
            (None, Some(url)) => {
                let (bucket, prefix) =
                    parse_s3_url(url).map_err(|e| ConfigError(format!("{file}: {what} {e}")))?;
                let need = |key: &str, v: &Option<String>| -> anyhow::Result<String> {
                    match v.as_deref() {
                        Some(v) if !v.is_empty() => Ok(v.to_owned()),
                        _ => config_error(format!("{file}: {what} needs {key}")),
                    }
                };
                let endpoint = need("endpoint", &s.endpoint)?;
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return config_error(format!(
                        "{file}: {what} endpoint = {endpoint:?} must start with http:// or https://"
                    ));
                }
                let Some(secret_file) = &s.secret_access_key_file else {
                    return config_error(format!(
                        "{file}: {what} needs secret_access_key_file (the key is never \
                         written in this file)"
                    ));
                };
                Ok(RepoSpec::S3(S3Repo {
                    bucket,
                    prefix,
                    endpoint: endpoint.trim_end_matches('/').to_owned(),
                    region: s.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
                    access_key_id: need("access_key_id", &s.access_key_id)?,
                    secret_access_key: read_secret_file(secret_file, what)?,
                    path_style: s.path_style.unwrap_or(true),
                    parallel,
                    timeout: match s.timeout_s {
                        Some(0) => {
                            return config_error(format!(
                                "{file}: {what} timeout_s must be at least 1"
                            ));
                        }
                        Some(n) => std::time::Duration::from_secs(n),
                        None => crate::s3::DEFAULT_TIMEOUT,
                    },
                    retries: s.retries.unwrap_or(crate::s3::DEFAULT_RETRIES),
                }))
            }
        }
    }
}

/// The secret key from its file (a trailing newline dropped); errors name
/// the file, never its content.
fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<Secret> {
    let secret = super::read_secret_file(path, &format!("{what} secret_access_key_file"))?;
    if secret.expose().is_empty() {
        return config_error(format!(
            "{what}: secret_access_key_file {} is empty",
            path.display()
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos(text: &str) -> Repositories {
        let t = super::super::tool::parse_str(text, Path::new("/k.toml")).unwrap();
        Repositories {
            default: t.repository,
            named: t.repositories,
            file: "/k.toml".into(),
            global_retention: crate::retention::Policy::recommended(),
        }
    }

    #[test]
    fn urls_split_into_bucket_and_prefix_and_bad_ones_are_refused() {
        assert_eq!(
            parse_s3_url("s3://backups/kc/main/").unwrap(),
            ("backups".into(), "kc/main".into())
        );
        assert_eq!(parse_s3_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        for bad in [
            "s3://",
            "s3://B/x",
            "http://b/x",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_paths_and_urls_resolve_and_a_misspelt_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3.key");
        std::fs::write(&secret, "sEcReT\n").unwrap();
        let r = repos(&format!(
            "[repository]\npath = \"/var/lib/kcbackup\"\n\
             [repositories.usb]\npath = \"/mnt/usb/kc\"\n\
             [repositories.offsite]\nurl = \"s3://bkt/kc\"\nendpoint = \"http://127.0.0.1:9/\"\n\
             access_key_id = \"AK\"\nsecret_access_key_file = \"{}\"\n",
            secret.display()
        ));
        assert_eq!(
            r.resolve("usb").unwrap(),
            (Some("usb".into()), RepoSpec::Local("/mnt/usb/kc".into()))
        );
        let (_, off) = r.resolve("offsite").unwrap();
        let RepoSpec::S3(s3) = &off else { panic!() };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str(), s3.endpoint.as_str()),
            ("bkt", "kc", "http://127.0.0.1:9")
        );
        assert_eq!(s3.secret_access_key.expose(), "sEcReT");
        assert!(!format!("{off:?}").contains("sEcReT"));
        let (_, other) = r.resolve("s3://bkt/elsewhere").unwrap();
        assert_eq!(other.to_string(), "s3://bkt/elsewhere");
        assert!(r.resolve("s3://nobucket/x").is_err());
        assert_eq!(
            r.resolve("/srv/r").unwrap().1,
            RepoSpec::Local("/srv/r".into())
        );
        let err = r.resolve("ofsite").unwrap_err();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
        assert!(
            format!("{err:#}").contains("usb, offsite")
                || format!("{err:#}").contains("offsite, usb")
        );
        assert_eq!(
            r.default_spec().unwrap(),
            RepoSpec::Local("/var/lib/kcbackup".into())
        );
    }

    #[test]
    fn encryption_needs_age_and_a_key_file_and_keys_need_encryption() {
        let ok = repos(
            "[repositories.x]\npath = \"/a\"\nencryption = \"age\"\nrecipients_file = \"/r\"\n",
        );
        let (_, spec) = ok.resolve("x").unwrap();
        assert!(spec.encrypted() && spec.local() == Some(Path::new("/a")));
        for (text, says) in [
            ("encryption = \"rot13\"\n", "only one is"),
            ("encryption = \"age\"\n", "needs recipients_file"),
            ("identity_file = \"/i\"\n", "need encryption"),
        ] {
            let r = repos(&format!("[repositories.x]\npath = \"/a\"\n{text}"));
            let err = r.resolve("x").unwrap_err();
            assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
    }

    #[test]
    fn an_s3_repository_needs_its_connection_and_never_a_path_too() {
        let both = repos("[repositories.x]\npath = \"/a\"\nurl = \"s3://bkt/a\"\n");
        assert!(format!("{:#}", both.resolve("x").unwrap_err()).contains("both path and url"));
        let no_key = repos(
            "[repositories.x]\nurl = \"s3://bkt/a\"\nendpoint = \"http://h\"\naccess_key_id = \"a\"\n",
        );
        assert!(
            format!("{:#}", no_key.resolve("x").unwrap_err()).contains("secret_access_key_file")
        );
        let stray = repos("[repositories.x]\npath = \"/a\"\nendpoint = \"http://h\"\n");
        assert!(format!("{:#}", stray.resolve("x").unwrap_err()).contains("endpoint is for url"));
        let missing = repos(
            "[repositories.x]\nurl = \"s3://bkt/a\"\nendpoint = \"http://h\"\naccess_key_id = \"a\"\n\
             secret_access_key_file = \"/nonexistent/key\"\n",
        );
        let err = missing.resolve("x").unwrap_err();
        assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
    }
}
