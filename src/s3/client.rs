//! The requests: each one presigned by rusty-s3 (or by its `sign` for the
//! few actions it lacks), sent by ureq with time limits, tried again with
//! exponential backoff while the failure is one that may pass.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use chrono::{DateTime, Utc};
use rusty_s3::{Bucket, Credentials, Method, S3Action, UrlStyle};
use ureq::http::Response;
use ureq::{Body, SendBody};

use super::config::{Endpoint, S3Config};
use super::error::{Error, ErrorKind, Failure};
use super::xml;
use crate::error::ConfigError;

/// How long a presigned URL stays valid: the signature is checked when a
/// request starts, so this only has to cover waits before sending.
const PRESIGN: Duration = Duration::from_secs(3600);
/// Error bodies are read for their code only.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Listing pages are XML of at most 1000 keys; a page larger than this is
/// not an S3 answer.
const MAX_PAGE: u64 = 64 * 1024 * 1024;
/// Above this an upload would need multipart (S3 refuses single PUTs over
/// 5 GiB). The multipart path is left to the S3 repository (issue 14).
pub const SINGLE_PUT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Exactly as listed (may begin with `/`).
    pub key: String,
    pub size: u64,
    /// As the server sends it, quotes included (`"d41d8..."`).
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    /// Set by HEAD, by GET and by [`Client::list_versions`].
    pub version_id: Option<String>,
}

/// One entry of ListObjectVersions: a version, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub object: ObjectInfo,
    pub is_latest: bool,
    pub delete_marker: bool,
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled.
    Off,
    Enabled,
    /// Was enabled: old versions are kept, new writes get the `null` version.
    Suspended,
}

/// The body of a GET, streamed: read it to the end, or drop it.
pub struct ObjectBody {
    pub info: ObjectInfo,
    pub reader: Box<dyn Read + Send>,
}

/// The client of one endpoint with one set of credentials. Cheap to share
/// between threads (`&Client` is `Send + Sync`; ureq's agent pools
/// connections).
pub struct Client {
    config: S3Config,
    credentials: Credentials,
    agent: ureq::Agent,
    /// Keys per listing page; `None` = the server's default (1000).
    page_size: Option<usize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.config.endpoint.to_string())
            .field("region", &self.config.region)
            .field("path_style", &self.config.path_style)
            .finish_non_exhaustive()
    }
}

/// What one try of a request produced.
type Try<T> = Result<T, ErrorKind>;

impl Client {
    pub fn new(config: S3Config) -> Client {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret.expose().to_owned(),
        );
        let limit = Some(config.timeout);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(limit)
            .timeout_send_request(limit)
            .timeout_recv_response(limit)
            .timeout_per_read(limit)
            .timeout_per_write(limit)
            .max_idle_connections_per_host(16)
            .user_agent(concat!("kcbackup/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            config,
            credentials,
            agent,
            page_size: None,
        }
    }

    /// Asks for listing pages of at most `keys` keys (tests of paging).
    pub fn with_page_size(mut self, keys: usize) -> Client {
        self.page_size = Some(keys);
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.config.endpoint
    }

    /// The bucket's URLs; a bucket name that cannot be part of a host name
    /// (virtual-host style, or an IP address as the host) is a config error.
    fn bucket(&self, name: &str) -> Result<Bucket, ConfigError> {
        let style = if self.config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        Bucket::new(
            self.config.endpoint.url().clone(),
            style,
            name.to_owned(),
            self.config.signing_region().to_owned(),
        )
        .map_err(|e| {
            ConfigError(format!(
                "bucket {name:?} at {} cannot be addressed in {} style: {e:?}",
                self.config.endpoint,
                if self.config.path_style {
                    "path"
                } else {
                    "virtual-host (set path style for an IP address or a dotted name)"
                },
            ))
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the tries run out.
    fn retry<T>(
        &self,
        operation: &'static str,
        bucket: &str,
        key: Option<&str>,
        mut attempt: impl FnMut() -> Try<T>,
    ) -> Result<T, Error> {
        let mut attempts = 0;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.config.retries)
            .with_jitter();
        let run = || {
            attempts += 1;
            attempt()
        };
        let result = run
            .retry(backoff)
            .when(ErrorKind::is_retryable)
            .notify(|e, wait| {
                tracing::debug!(
                    operation,
                    bucket,
                    ?key,
                    ?wait,
                    "S3 request failed, trying again: {e:?}"
                )
            })
            .call();
        result.map_err(|kind| {
            Error(Box::new(Failure {
                operation,
                endpoint: self.config.endpoint.to_string(),
                bucket: bucket.to_owned(),
                key: key.map(str::to_owned),
                kind,
                attempts,
            }))
        })
    }

    fn bucket_or_error(&self, operation: &'static str, name: &str) -> Result<Bucket, Error> {
        self.bucket(name)
            .map_err(|e| self.fail(operation, name, None, ErrorKind::Response(e.0)))
    }

    /// HEAD bucket: reachable, the bucket exists, the credentials are good.
    pub fn head_bucket(&self, bucket: &str) -> Result<(), Error> {
        let b = self.bucket_or_error("HEAD", bucket)?;
        self.retry("HEAD", bucket, None, || {
            let url = b.head_bucket(Some(&self.credentials)).sign(PRESIGN);
            check(self.agent.head(url.as_str()).call()).map(drop)
        })
    }

    /// How far the server's clock is ahead of ours (negative: behind), from
    /// the `Date` of a HEAD bucket answer, to the second; `None` when the
    /// server sends no readable date. Times the server stamps (LastModified)
    /// are compared with ours only after this correction.
    pub fn clock_offset(&self, bucket: &str) -> Result<Option<chrono::TimeDelta>, Error> {
        let b = self.bucket_or_error("HEAD", bucket)?;
        self.retry("HEAD", bucket, None, || {
            let url = b.head_bucket(Some(&self.credentials)).sign(PRESIGN);
            let before = Utc::now();
            let response = check(self.agent.head(url.as_str()).call())?;
            let after = Utc::now();
            let date = response
                .headers()
                .get("date")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| DateTime::parse_from_rfc2822(v).ok());
            // The date is truncated to the second: its middle is the best guess.
            let ours = before + (after - before) / 2;
            let half = chrono::TimeDelta::milliseconds(500);
            Ok(date.map(|d| d.with_timezone(&Utc) + half - ours))
        })
    }

    /// Creates a bucket (tests, scratch buckets); one that is already ours
    /// is fine.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), Error> {
        let b = self.bucket_or_error("CREATE", bucket)?;
        self.retry("CREATE", bucket, None, || {
            let action = b.create_bucket(&self.credentials);
            let url = action.sign(PRESIGN);
            match check(self.agent.put(url.as_str()).send(action.body())) {
                Ok(_) => Ok(()),
                Err(ErrorKind::Status { code, .. })
                    if code.as_deref() == Some("BucketAlreadyOwnedByYou") =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Lists every object under `prefix`, page by page, calling `each` in
    /// key order; memory holds one page.
    pub fn list_v2(
        &self,
        bucket: &str,
        prefix: &str,
        each: &mut dyn FnMut(ObjectInfo) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let b = self.bucket_or_error("LIST", bucket)?;
        let mut token: Option<String> = None;
        loop {
            let page = self.retry("LIST", bucket, Some(prefix), || {
                let mut action = b.list_objects_v2(Some(&self.credentials));
                action.with_prefix(prefix);
                if let Some(n) = self.page_size {
                    action.with_max_keys(n);
                }
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(PRESIGN);
                let body = read_text(check(self.agent.get(url.as_str()).call())?, MAX_PAGE)?;
                rusty_s3::actions::ListObjectsV2::parse_response(&body)
                    .map_err(|e| ErrorKind::Response(format!("ListObjectsV2: {e}")))
            })?;
            for c in page.contents {
                each(ObjectInfo {
                    key: c.key,
                    size: c.size.unwrap_or(0),
                    etag: c.etag,
                    last_modified: c.last_modified.as_deref().and_then(parse_time),
                    version_id: None,
                })?;
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// HEAD object; `None` when there is no such key.
    pub fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, Error> {
        let b = self.bucket_or_error("HEAD", bucket)?;
        let result = self.retry("HEAD", bucket, Some(key), || {
            let url = b.head_object(Some(&self.credentials), key).sign(PRESIGN);
            check(self.agent.head(url.as_str()).call()).map(|r| info_of(key, &r))
        });
        match result {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET an object (a given version of it, with `version_id`), streamed.
    /// Only the start of the request is retried: a body that breaks off
    /// fails the read, and the caller starts the object again.
    pub fn get(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectBody, Error> {
        let b = self.bucket_or_error("GET", bucket)?;
        self.retry("GET", bucket, Some(key), || {
            let mut action = b.get_object(Some(&self.credentials), key);
            if let Some(v) = version_id {
                action.query_mut().insert("versionId", v);
            }
            let url = action.sign(PRESIGN);
            let response = check(self.agent.get(url.as_str()).call())?;
            let info = info_of(key, &response);
            Ok(ObjectBody {
                info,
                reader: Box::new(response.into_body().into_reader()),
            })
        })
    }

    /// PUT an object from a file, streamed. Objects above
    /// [`SINGLE_PUT_LIMIT`] need multipart, which is not here yet (the seam
    /// for the S3 repository).
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), Error> {
        let len = std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| self.local_error("PUT", bucket, key, path, e))?;
        self.put_reader(bucket, key, len, &mut || {
            let file = File::open(path).map_err(|e| {
                anyhow::Error::new(e).context(format!("while opening {}", path.display()))
            })?;
            Ok(Box::new(file))
        })
    }

    /// PUT an object of `len` bytes, streamed from the reader `open` gives;
    /// `open` is called once per try, and its own failure is not tried
    /// again.
    pub fn put_reader(
        &self,
        bucket: &str,
        key: &str,
        len: u64,
        open: &mut dyn FnMut() -> anyhow::Result<Box<dyn Read + Send>>,
    ) -> Result<(), Error> {
        let b = self.bucket_or_error("PUT", bucket)?;
        if len > SINGLE_PUT_LIMIT {
            return Err(self.fail(
                "PUT",
                bucket,
                Some(key),
                ErrorKind::Response(format!(
                    "{len} bytes is above the single PUT limit; multipart is not supported yet"
                )),
            ));
        }
        self.retry("PUT", bucket, Some(key), || {
            let mut reader = open().map_err(|e| ErrorKind::Response(format!("{e:#}")))?;
            let url = b.put_object(Some(&self.credentials), key).sign(PRESIGN);
            let request = self
                .agent
                .put(url.as_str())
                .header("content-length", len.to_string());
            check(request.send(SendBody::from_reader(&mut reader))).map(drop)
        })
    }

    /// PUT a large object from a file in parts of `part_size` bytes (at
    /// least 5 MiB, S3's smallest part but the last): each part streamed
    /// from its range of the file and tried again on its own; an upload
    /// that fails is aborted, so no parts are left billed. (s3repo, issue 14.)
    pub fn put_file_multipart(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        part_size: u64,
    ) -> Result<(), Error> {
        let b = self.bucket_or_error("PUT", bucket)?;
        let part_size = part_size.max(5 << 20);
        let len = std::fs::metadata(path)
            .map_err(|e| self.local_error("PUT", bucket, key, path, e))?
            .len();
        let upload_id = self.retry("CREATE multipart", bucket, Some(key), || {
            let url = b
                .create_multipart_upload(Some(&self.credentials), key)
                .sign(PRESIGN);
            let body = read_text(
                check(self.agent.post(url.as_str()).send_empty())?,
                MAX_ERROR_BODY,
            )?;
            rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
                .map(|r| r.upload_id().to_owned())
                .map_err(|e| ErrorKind::Response(format!("CreateMultipartUpload: {e}")))
        })?;
        let parts = (|| -> Result<Vec<String>, Error> {
            let mut etags = Vec::new();
            let count = len.div_ceil(part_size).max(1);
            for n in 0..count {
                let number = u16::try_from(n + 1).map_err(|_| {
                    let why = format!("{len} bytes need more than {} parts", u16::MAX);
                    self.fail("PUT part", bucket, Some(key), ErrorKind::Response(why))
                })?;
                let start = n * part_size;
                let size = part_size.min(len - start);
                let etag = self.retry("PUT part", bucket, Some(key), || {
                    let mut file = File::open(path).map_err(|e| {
                        ErrorKind::Transport(format!("opening {}: {e}", path.display()))
                    })?;
                    file.seek(std::io::SeekFrom::Start(start))
                        .map_err(|e| ErrorKind::Transport(e.to_string()))?;
                    let url = b
                        .upload_part(Some(&self.credentials), key, number, &upload_id)
                        .sign(PRESIGN);
                    let request = self
                        .agent
                        .put(url.as_str())
                        .header("content-length", size.to_string());
                    let mut part = file.take(size);
                    let response = check(request.send(SendBody::from_reader(&mut part)))?;
                    response
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            ErrorKind::Response("UploadPart answered without an ETag".into())
                        })
                })?;
                etags.push(etag);
            }
            Ok(etags)
        })();
        let completed = parts.and_then(|etags| {
            self.retry("COMPLETE multipart", bucket, Some(key), || {
                let action = b.complete_multipart_upload(
                    Some(&self.credentials),
                    key,
                    &upload_id,
                    etags.iter().map(String::as_str),
                );
                let url = action.sign(PRESIGN);
                check(self.agent.post(url.as_str()).send(action.body())).map(drop)
            })
        });
        if completed.is_err() {
            let _ = self.retry("ABORT multipart", bucket, Some(key), || {
                let url = b
                    .abort_multipart_upload(Some(&self.credentials), key, &upload_id)
                    .sign(PRESIGN);
                check(self.agent.delete(url.as_str()).call()).map(drop)
            });
        }
        completed
    }

    fn fail(
        &self,
        operation: &'static str,
        bucket: &str,
        key: Option<&str>,
        kind: ErrorKind,
    ) -> Error {
        Error(Box::new(Failure {
            operation,
            endpoint: self.config.endpoint.to_string(),
            bucket: bucket.to_owned(),
            key: key.map(str::to_owned),
            kind,
            attempts: 0,
        }))
    }

    fn local_error(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        path: &Path,
        e: std::io::Error,
    ) -> Error {
        let why = format!("while reading {}: {e}", path.display());
        self.fail(operation, bucket, Some(key), ErrorKind::Response(why))
    }

    /// PUT an object from memory (small objects: tests, markers).
    pub fn put_bytes(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), Error> {
        let b = self.bucket_or_error("PUT", bucket)?;
        self.retry("PUT", bucket, Some(key), || {
            let url = b.put_object(Some(&self.credentials), key).sign(PRESIGN);
            check(self.agent.put(url.as_str()).send(data)).map(drop)
        })
    }

    /// DELETE an object (a given version, with `version_id`). Deleting a key
    /// that does not exist succeeds, as in S3.
    pub fn delete(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<(), Error> {
        let b = self.bucket_or_error("DELETE", bucket)?;
        let result = self.retry("DELETE", bucket, Some(key), || {
            let mut action = b.delete_object(Some(&self.credentials), key);
            if let Some(v) = version_id {
                action.query_mut().insert("versionId", v);
            }
            let url = action.sign(PRESIGN);
            check(self.agent.delete(url.as_str()).call()).map(drop)
        });
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// GetBucketVersioning.
    pub fn versioning(&self, bucket: &str) -> Result<Versioning, Error> {
        let b = self.bucket_or_error("GET versioning", bucket)?;
        self.retry("GET versioning", bucket, None, || {
            let url = self.sign_bucket(&b, Method::Get, &[("versioning", "")]);
            let body = read_text(check(self.agent.get(url.as_str()).call())?, MAX_ERROR_BODY)?;
            let parsed = xml::versioning(&body)
                .map_err(|e| ErrorKind::Response(format!("GetBucketVersioning: {e}")))?;
            Ok(match parsed.status.as_deref() {
                Some("Enabled") => Versioning::Enabled,
                Some("Suspended") => Versioning::Suspended,
                _ => Versioning::Off,
            })
        })
    }

    /// PutBucketVersioning: enables or suspends versioning (tests, setup).
    pub fn set_versioning(&self, bucket: &str, enabled: bool) -> Result<(), Error> {
        let b = self.bucket_or_error("PUT versioning", bucket)?;
        self.retry("PUT versioning", bucket, None, || {
            let url = self.sign_bucket(&b, Method::Put, &[("versioning", "")]);
            check(
                self.agent
                    .put(url.as_str())
                    .send(xml::versioning_body(enabled)),
            )
            .map(drop)
        })
    }

    /// ListObjectVersions under `prefix`, page by page: every version and
    /// delete marker, in key order, newest version of a key first.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        each: &mut dyn FnMut(ObjectVersion) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let b = self.bucket_or_error("LIST versions", bucket)?;
        let mut markers: Option<(String, Option<String>)> = None;
        loop {
            let page = self.retry("LIST versions", bucket, Some(prefix), || {
                let page_size = self.page_size.map(|n| n.to_string());
                let mut query: Vec<(&str, &str)> = vec![("prefix", prefix), ("versions", "")];
                if let Some(n) = &page_size {
                    query.push(("max-keys", n));
                }
                if let Some((key, version)) = &markers {
                    query.push(("key-marker", key));
                    if let Some(v) = version {
                        query.push(("version-id-marker", v));
                    }
                }
                query.sort();
                let url = self.sign_bucket(&b, Method::Get, &query);
                let body = read_text(check(self.agent.get(url.as_str()).call())?, MAX_PAGE)?;
                xml::list_versions(&body)
                    .map_err(|e| ErrorKind::Response(format!("ListObjectVersions: {e}")))
            })?;
            let mut truncated = false;
            let mut next_key = None;
            let mut next_version = None;
            for field in page.fields {
                let (entry, delete_marker) = match field {
                    xml::VersionsField::IsTruncated(t) => {
                        truncated = t;
                        continue;
                    }
                    xml::VersionsField::NextKeyMarker(k) => {
                        next_key = Some(k);
                        continue;
                    }
                    xml::VersionsField::NextVersionIdMarker(v) => {
                        next_version = Some(v);
                        continue;
                    }
                    xml::VersionsField::Other => continue,
                    xml::VersionsField::Version(v) => (v, false),
                    xml::VersionsField::DeleteMarker(d) => (d, true),
                };
                each(ObjectVersion {
                    object: ObjectInfo {
                        key: entry.key,
                        size: entry.size.unwrap_or(0),
                        etag: entry.etag,
                        last_modified: entry.last_modified.as_deref().and_then(parse_time),
                        version_id: entry.version_id.filter(|v| !v.is_empty()),
                    },
                    is_latest: entry.is_latest,
                    delete_marker,
                })?;
            }
            match (truncated, next_key) {
                (true, Some(key)) => markers = Some((key, next_version)),
                (true, None) => anyhow::bail!(
                    "S3 ListObjectVersions of bucket {bucket:?} at {} is truncated without a next key",
                    self.config.endpoint
                ),
                (false, _) => return Ok(()),
            }
        }
    }

    /// Presigns a bucket-level request with a sorted query, for the actions
    /// rusty-s3 has no type for.
    fn sign_bucket(&self, bucket: &Bucket, method: Method, query: &[(&str, &str)]) -> url::Url {
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            bucket.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            None,
            bucket.region(),
            PRESIGN.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        )
    }
}

/// Turns ureq's result into the response of a 2xx, or the reason why not.
fn check(result: Result<Response<Body>, ureq::Error>) -> Try<Response<Body>> {
    let response = result.map_err(transport)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    // HEAD answers have no body: only the status tells.
    let body = read_text(response, MAX_ERROR_BODY).unwrap_or_default();
    Err(ErrorKind::Status {
        status,
        code: xml::error_code(&body),
    })
}

fn transport(e: ureq::Error) -> ErrorKind {
    match e {
        ureq::Error::Timeout(_) => ErrorKind::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        other => ErrorKind::Transport(other.to_string()),
    }
}

fn read_text(response: Response<Body>, limit: u64) -> Try<String> {
    response
        .into_body()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(transport)
}

/// Size, ETag, Last-Modified and version of a HEAD or GET answer.
fn info_of(key: &str, response: &Response<Body>) -> ObjectInfo {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    ObjectInfo {
        key: key.to_owned(),
        size: header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        etag: header("etag"),
        last_modified: header("last-modified").and_then(|v| {
            DateTime::parse_from_rfc2822(&v)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }),
        version_id: header("x-amz-version-id").filter(|v| !v.is_empty()),
    }
}

/// S3's timestamps in listings: RFC 3339 (`2026-12-01T10:00:00.000Z`).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
