//! The S3 client (src/s3) against real servers: SeaweedFS (SigV4 checked,
//! versioning) and moto (leading `/` kept in keys). Each test takes a
//! bucket of its own on the binary's shared server.

#[path = "support/s3server.rs"]
mod s3server;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use kcbackup::s3::{Client, Endpoint, ErrorKind, S3Config, Versioning};
use kcbackup::settings::Secret;
use s3server::{Kind, S3Server};

fn servers(test: &str) -> Vec<&'static S3Server> {
    if !s3server::available(test) {
        return Vec::new();
    }
    vec![s3server::shared_seaweed(), s3server::shared_moto()]
}

fn list(client: &Client, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
    let mut keys = Vec::new();
    client
        .list_v2(bucket, prefix, &mut |o| {
            keys.push((o.key, o.size));
            Ok(())
        })
        .unwrap();
    keys
}

#[test]
fn put_list_head_get_delete_round_trip_on_both_servers() {
    for server in servers("put_list_head_get_delete_round_trip_on_both_servers") {
        let client = server.client().with_page_size(2);
        let bucket = server.bucket("rt");
        for id in 1..=5u32 {
            let body = format!("attachment {id}").repeat(id as usize);
            client
                .put_bytes(&bucket, &format!("var/att/{id}"), body.as_bytes())
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![7u8; 3 * 1024 * 1024]).unwrap();
        client.put_file(&bucket, "var/att/6", &file).unwrap();

        // Three pages of two keys each.
        let keys = list(&client, &bucket, "var/att/");
        assert_eq!(keys.len(), 6, "{:?}: {keys:?}", server.kind);
        assert_eq!(keys[5], ("var/att/6".to_owned(), 3 * 1024 * 1024));

        let head = client.head(&bucket, "var/att/3").unwrap().unwrap();
        assert_eq!(head.size, "attachment 3".len() as u64 * 3);
        assert!(head.etag.is_some());
        assert!(head.last_modified.is_some());
        assert!(client.head(&bucket, "var/att/99").unwrap().is_none());

        let mut body = client.get(&bucket, "var/att/6", None).unwrap();
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let got = body.reader.read(&mut buf).unwrap();
            if got == 0 {
                break;
            }
            assert!(buf[..got].iter().all(|&b| b == 7));
            n += got as u64;
        }
        assert_eq!(n, 3 * 1024 * 1024);

        let missing = client.get(&bucket, "var/att/99", None).err().unwrap();
        assert!(missing.is_not_found(), "{missing}");
        assert!(missing.to_string().contains("var/att/99"), "{missing}");

        client.delete(&bucket, "var/att/1", None).unwrap();
        client.delete(&bucket, "var/att/1", None).unwrap();
        assert_eq!(list(&client, &bucket, "var/att/").len(), 5);
    }
}

/// Kopano's keys begin with `/` under the default attachment_path. moto
/// keeps the slash as AWS does; SeaweedFS strips it, and lists the
/// stripped key under both prefixes. Either way the key listed is the one
/// GET answers to.
#[test]
fn a_key_with_a_leading_slash_is_listed_under_one_of_the_two_forms() {
    for server in servers("a_key_with_a_leading_slash_is_listed_under_one_of_the_two_forms") {
        let client = server.client();
        let bucket = server.bucket("slash");
        client
            .put_bytes(&bucket, "/var/lib/kopano/attachments/42", b"forty-two")
            .unwrap();
        let with = list(&client, &bucket, "/var/lib/kopano/attachments/");
        let without = list(&client, &bucket, "var/lib/kopano/attachments/");
        let listed: std::collections::BTreeSet<_> = with.iter().chain(&without).collect();
        assert_eq!(listed.len(), 1, "{:?}: {with:?} {without:?}", server.kind);
        let key = &listed.first().unwrap().0;
        match server.kind {
            Kind::Moto => assert_eq!(key, "/var/lib/kopano/attachments/42"),
            Kind::Seaweed => assert_eq!(key, "var/lib/kopano/attachments/42"),
        }
        let mut body = client.get(&bucket, key, None).unwrap();
        let mut text = String::new();
        body.reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "forty-two");
    }
}

#[test]
fn a_wrong_secret_is_refused_naming_the_endpoint_and_never_the_secret() {
    if !s3server::available("a_wrong_secret_is_refused_naming_the_endpoint_and_never_the_secret") {
        return;
    }
    let server = s3server::shared_seaweed();
    let bucket = server.bucket("auth");
    let wrong = "wrong-secret-value-5d1f0e";
    let mut config = server.config();
    config.secret = Secret::new(wrong);
    let client = Client::new(config);
    let err = client.head_bucket(&bucket).err().unwrap();
    assert_eq!(err.status(), Some(403), "{err}");
    assert_eq!(err.attempts, 1, "a 403 is not tried again");
    let err = client.list_v2(&bucket, "", &mut |_| Ok(())).err().unwrap();
    let text = format!("{err:#} {err:?}");
    assert!(text.contains(&server.endpoint), "{text}");
    assert!(text.contains(&bucket), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(s3server::SECRET_KEY), "{text}");
}

#[test]
fn versioning_keeps_old_versions_readable_by_id() {
    if !s3server::available("versioning_keeps_old_versions_readable_by_id") {
        return;
    }
    let server = s3server::shared_seaweed();
    let client = server.client().with_page_size(1);
    let bucket = server.bucket("ver");
    assert_eq!(client.versioning(&bucket).unwrap(), Versioning::Off);
    client.set_versioning(&bucket, true).unwrap();
    assert_eq!(client.versioning(&bucket).unwrap(), Versioning::Enabled);
    client.put_bytes(&bucket, "a/1", b"first").unwrap();
    client.put_bytes(&bucket, "a/1", b"second").unwrap();
    client.put_bytes(&bucket, "a/2", b"other").unwrap();
    client.delete(&bucket, "a/1", None).unwrap();
    assert!(client.head(&bucket, "a/1").unwrap().is_none());

    let mut versions = Vec::new();
    client
        .list_versions(&bucket, "a/", &mut |v| {
            versions.push(v);
            Ok(())
        })
        .unwrap();
    let of_1: Vec<_> = versions.iter().filter(|v| v.object.key == "a/1").collect();
    assert_eq!(of_1.len(), 3, "{versions:?}");
    assert_eq!(of_1.iter().filter(|v| v.delete_marker).count(), 1);
    let first = of_1
        .iter()
        .filter(|v| !v.delete_marker)
        .min_by_key(|v| v.object.last_modified)
        .unwrap();
    let id = first.object.version_id.as_deref().unwrap();
    let mut body = client.get(&bucket, "a/1", Some(id)).unwrap();
    let mut text = String::new();
    body.reader.read_to_string(&mut text).unwrap();
    assert!(text == "first" || text == "second", "{text}");
    assert_eq!(body.info.version_id.as_deref(), Some(id));
}

/// A server that accepts connections and never answers: each try times
/// out, the tries are counted, the error says so. (A listener stands in:
/// no real server can be told to hang.)
#[test]
fn a_silent_server_times_out_after_the_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let mut config = S3Config::new(endpoint, "", true, "AK", Secret::new("sk"));
    config.timeout = Duration::from_millis(300);
    config.retries = 2;
    let err = Client::new(config).head_bucket("b").err().unwrap();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert_eq!(err.attempts, 3);
    assert!(err.to_string().contains("timed out"), "{err}");
}

/// 503 SlowDown is tried again and succeeds when the server recovers. (A
/// scripted listener stands in: a real server throttles only under load.)
#[test]
fn slow_down_is_tried_again_until_the_server_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _server = std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = if n < 2 {
                let body = "<Error><Code>SlowDown</Code></Error>";
                format!(
                    "HTTP/1.1 503 Slow Down\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let mut config = S3Config::new(endpoint, "", true, "AK", Secret::new("sk"));
    config.retries = 3;
    Client::new(config).head_bucket("b").unwrap();
}

/// A server of its own, stopped: requests fail as transport errors, and
/// its directory is gone.
#[test]
fn a_stopped_server_leaves_nothing_behind() {
    if !s3server::available("a_stopped_server_leaves_nothing_behind") {
        return;
    }
    let mut server = S3Server::start(Kind::Seaweed);
    let mut config = server.config();
    config.retries = 1;
    config.timeout = Duration::from_secs(2);
    let client = Client::new(config);
    client.create_bucket("mine").unwrap();
    let pid = server.pid;
    server.stop();
    assert!(!kcbackup::sandbox::process_alive(pid));
    let err = client.head_bucket("mine").err().unwrap();
    assert!(matches!(err.kind, ErrorKind::Transport(_)), "{err}");
}
