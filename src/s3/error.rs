//! A failed S3 request: what was asked of which endpoint, bucket and key,
//! and why. Built from the request, never from the signed URL, so the
//! message can hold no credential.

use std::fmt;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with an error status; `code` is S3's error code
    /// (`NoSuchKey`, `SignatureDoesNotMatch`, `SlowDown`, ...) when the body
    /// had one.
    Status { status: u16, code: Option<String> },
    /// No answer in time (connect, response or the next bytes of a body).
    Timeout,
    /// Connection refused or reset, DNS, TLS, a broken body.
    Transport(String),
    /// The server's answer could not be understood.
    Response(String),
}

impl ErrorKind {
    /// Whether trying again may help: 5xx (SlowDown is a 503), 429,
    /// timeouts, dropped connections; never 4xx like 403 or 404.
    pub fn is_retryable(&self) -> bool {
        match self {
            ErrorKind::Status { status, code } => {
                *status >= 500 || *status == 429 || code.as_deref() == Some("SlowDown")
            }
            ErrorKind::Timeout | ErrorKind::Transport(_) => true,
            ErrorKind::Response(_) => false,
        }
    }
}

/// One failed operation, after its last try (boxed: results stay small).
#[derive(Debug, Clone)]
pub struct Error(pub Box<Failure>);

impl std::ops::Deref for Error {
    type Target = Failure;
    fn deref(&self) -> &Failure {
        &self.0
    }
}

/// What [`Error`] holds.
#[derive(Debug, Clone)]
pub struct Failure {
    pub operation: &'static str,
    pub endpoint: String,
    pub bucket: String,
    /// The object key, when the operation had one.
    pub key: Option<String>,
    pub kind: ErrorKind,
    /// How many tries were made.
    pub attempts: usize,
}

impl Failure {
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::Status { status: 404, .. })
    }

    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Status { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3 {} of ", self.operation)?;
        match &self.key {
            Some(key) => write!(f, "key {key:?} in bucket {:?}", self.bucket)?,
            None => write!(f, "bucket {:?}", self.bucket)?,
        }
        write!(f, " at {} failed", self.endpoint)?;
        if self.attempts > 1 {
            write!(f, " after {} tries", self.attempts)?;
        }
        match &self.kind {
            ErrorKind::Status { status, code } => {
                write!(f, ": HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                match (status, code.as_deref()) {
                    (
                        403,
                        Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied"),
                    )
                    | (403, None) => f.write_str(" (check the access key id and secret)")?,
                    _ => {}
                }
                Ok(())
            }
            ErrorKind::Timeout => f.write_str(": timed out"),
            ErrorKind::Transport(why) => write!(f, ": {why}"),
            ErrorKind::Response(why) => write!(f, ": unexpected answer: {why}"),
        }
    }
}

impl std::error::Error for Error {}
