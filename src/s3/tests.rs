use std::time::Duration;

use super::*;
use crate::settings::Secret;

#[test]
fn kopano_hostnames_take_the_protocol_and_keep_the_port() {
    let e = Endpoint::parse("s3.example.com:9000", Some("http")).unwrap();
    assert_eq!(e.to_string(), "http://s3.example.com:9000");
    let e = Endpoint::parse("s3.example.com", Some("https-only")).unwrap();
    assert_eq!(e.to_string(), "https://s3.example.com");
    // Kopano's default protocol is https.
    let e = Endpoint::parse("s3.example.com", None).unwrap();
    assert_eq!(e.url().scheme(), "https");
    let e = Endpoint::parse("http://127.0.0.1:8333", Some("https")).unwrap();
    assert_eq!(e.to_string(), "http://127.0.0.1:8333");
    assert!(Endpoint::parse("", None).is_err());
    assert!(Endpoint::parse("ftp://x", None).is_err());
    assert!(Endpoint::parse("http://user:pw@x", None).is_err());
}

#[test]
fn an_empty_region_signs_as_us_east_1() {
    let e = Endpoint::parse("http://127.0.0.1:1", None).unwrap();
    let c = S3Config::new(e.clone(), "", true, "key", Secret::new("s"));
    assert_eq!(c.signing_region(), DEFAULT_REGION);
    let c = S3Config::new(e, " eu-west-1 ", true, "key", Secret::new("s"));
    assert_eq!(c.signing_region(), "eu-west-1");
}

#[test]
fn retries_only_what_may_pass() {
    let status = |status, code: Option<&str>| ErrorKind::Status {
        status,
        code: code.map(str::to_owned),
    };
    assert!(status(500, None).is_retryable());
    assert!(status(503, Some("SlowDown")).is_retryable());
    assert!(ErrorKind::Timeout.is_retryable());
    assert!(!status(403, Some("SignatureDoesNotMatch")).is_retryable());
    assert!(!status(404, Some("NoSuchKey")).is_retryable());
}

/// A refused connection is tried again, then fails naming the endpoint,
/// bucket and key, and nothing of the secret.
#[test]
fn a_dead_endpoint_fails_after_the_retries_without_the_secret() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = Endpoint::parse(&format!("127.0.0.1:{port}"), Some("http")).unwrap();
    let secret = "very-secret-key-1234567890";
    let mut config = S3Config::new(endpoint, "", true, "AKIDTEST", Secret::new(secret));
    config.retries = 2;
    config.timeout = Duration::from_secs(2);
    let client = Client::new(config);
    let err = client
        .get("bkt", "/var/lib/kopano/attachments/7", None)
        .err()
        .unwrap();
    assert_eq!(err.attempts, 3);
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("\"bkt\""), "{text}");
    assert!(text.contains("/var/lib/kopano/attachments/7"), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{client:?}").contains(secret));
    assert!(!format!("{err:?}").contains(secret));
}
