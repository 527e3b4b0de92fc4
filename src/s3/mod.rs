//! The one S3 client of kcbackup: SigV4-signed requests (rusty-s3) over
//! ureq, synchronous and streaming, with timeouts on every request and
//! retries with backoff (backon) on 5xx, SlowDown and timeouts.

mod client;
mod config;
mod error;
mod xml;

pub use client::{Client, ObjectBody, ObjectInfo, ObjectVersion, Versioning};
pub use config::{
    DEFAULT_REGION, DEFAULT_RETRIES, DEFAULT_TIMEOUT, Endpoint, S3Config, kopano_path_style,
};
pub use error::{Error, ErrorKind, Failure};

#[cfg(test)]
mod tests;
