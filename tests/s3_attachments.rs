//! Backups of an `s3` attachment store against real S3 servers (SeaweedFS,
//! which checks signatures and keeps versions, and moto, which keeps the
//! leading `/` of Kopano's keys): capture, reuse, the proof with and
//! without a versioned view, and the failures (wrong secret, the server
//! gone mid-capture), with the real MariaDB dump.

mod common;
mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::snapbackup::{SlowDump, published_sets, spawn_backup, work_dirs};
use kcbackup::generator::{S3Target, add_attachments};
use kcbackup::layout::Layout;
use kcbackup::repo::manifest::Manifest;
use support::s3server::{self, Kind, S3Server};
use support::{Env, num};

/// A generated s3 store on `server`, in a bucket of its own; `versioned`
/// turns versioning on before the first object is written.
fn s3_env(server: &S3Server, versioned: bool) -> (Env, String) {
    let bucket = server.bucket("kc");
    if versioned {
        server.client().set_versioning(&bucket, true).unwrap();
    }
    let target = S3Target {
        config: server.config(),
        bucket: bucket.clone(),
    };
    let env = support::env_with(Layout::S3, |spec| spec.s3 = Some(target));
    (env, bucket)
}

/// The key of instance `id` as the bucket lists it.
fn key_of(env: &Env, server: &S3Server, bucket: &str, id: u32) -> String {
    let with_slash = format!("{}/{id}", env.store.attachment_path.display());
    let client = server.client();
    if client.head(bucket, &with_slash).unwrap().is_some() && server.kind == Kind::Moto {
        return with_slash;
    }
    with_slash.trim_start_matches('/').to_owned()
}

/// Appends `text` to the env's kcbackup.toml.
fn add_config(env: &Env, text: &str) {
    let mut config = fs::read_to_string(&env.config).unwrap();
    config.push_str(text);
    fs::write(&env.config, config).unwrap();
}

fn with_slow_dump(env: &Env, dir: &Path) -> SlowDump {
    let dump = SlowDump::new(dir, 4);
    let script = toml::Value::String(dump.script.display().to_string());
    add_config(env, &format!("\n[mysql]\ndump_command = {script}\n"));
    dump
}

fn manifest(env: &Env, set: &str) -> Manifest {
    Manifest::load(&env.set_dir(set)).expect("manifest")
}

#[test]
fn an_s3_store_is_captured_and_proved_and_verifies() {
    if !s3server::available("an_s3_store_is_captured_and_proved_and_verifies") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, bucket) = s3_env(server, false);
    let referenced = env.store.expected.referenced.len() as u64;
    let run = env.backup(&[]);
    let j = &run.json;
    assert_eq!(run.code, 0, "{j:#}\n{}", run.stderr);
    assert_eq!(j["status"], "complete");
    assert_eq!(j["attachments"]["layout"], "s3");
    assert_eq!(num(j, "attachments.referenced"), referenced);
    assert_eq!(num(j, "attachments.present"), referenced);
    assert_eq!(num(j, "attachments.missing"), 0);
    assert_eq!(
        num(j, "attachments.extra"),
        u64::from(env.store.spec.extras)
    );
    assert_eq!(
        num(j, "attachments.capture.files"),
        referenced + u64::from(env.store.spec.extras)
    );
    assert_eq!(num(j, "attachments.capture.reused"), 0);

    let set = j["set"].as_str().unwrap();
    let m = manifest(&env, set);
    let source = m
        .attachments
        .s3
        .as_ref()
        .expect("s3 source in the manifest");
    assert_eq!(source.endpoint, server.endpoint);
    assert_eq!(source.bucket, bucket);
    assert_eq!(
        source.prefix,
        format!("{}/", env.store.attachment_path.display())
    );
    assert!(!source.versioning);
    for file in fs::read_dir(env.set_dir(set)).unwrap().flatten() {
        let bytes = fs::read(file.path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(s3server::SECRET_KEY), "{:?}", file.path());
    }
    // Every referenced instance's content is in the index under its key.
    let index = common::snapbackup::index_files(&env.set_dir(set));
    for (id, info) in &env.store.expected.instances {
        let key = key_of(&env, server, &bucket, *id);
        assert_eq!(index.get(&key), Some(&info.sha256), "instance {id}");
    }

    let verify = env.verify(set);
    assert_eq!(verify.code, 0, "{:#}", verify.json);
}

#[test]
fn a_second_backup_downloads_only_the_new_objects() {
    if !s3server::available("a_second_backup_downloads_only_the_new_objects") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (mut env, _bucket) = s3_env(server, false);
    let first = env.backup(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = num(&first.json, "attachments.capture.files");
    // About 1% new (at least one).
    let new = (before / 100).max(1) as u32;
    let old_ids: Vec<u32> = env.store.expected.instances.keys().copied().collect();
    add_attachments(common::server(), &mut env.store, new, 7).unwrap();
    let new_bytes: u64 = env
        .store
        .expected
        .instances
        .iter()
        .filter(|(id, _)| !old_ids.contains(id))
        .map(|(_, info)| info.size)
        .sum();
    let second = env.backup(&[]);
    let j = &second.json;
    assert_eq!(second.code, 0, "{j:#}");
    assert_eq!(num(j, "attachments.capture.read_files"), u64::from(new));
    assert_eq!(num(j, "attachments.capture.read_bytes"), new_bytes);
    assert_eq!(num(j, "attachments.capture.reused"), before);
    assert_eq!(num(j, "attachments.missing"), 0);
    let set = j["set"].as_str().unwrap();
    assert_eq!(
        manifest(&env, set).attachments.previous_set.as_deref(),
        first.json["set"].as_str()
    );
}

/// Deleted from the bucket while the dump is held up right after its
/// transaction began: missing (with its id) from a plain bucket, present
/// from a versioned one, read as it was when the transaction began.
#[test]
fn an_object_deleted_after_the_transaction_began_is_missing_unless_versioned() {
    if !s3server::available(
        "an_object_deleted_after_the_transaction_began_is_missing_unless_versioned",
    ) {
        return;
    }
    let server = s3server::shared_seaweed();
    for versioned in [false, true] {
        let (env, bucket) = s3_env(server, versioned);
        let dir = tempfile::tempdir().unwrap();
        let dump = with_slow_dump(&env, dir.path());
        let victim = *env.store.expected.referenced.iter().nth(3).unwrap();
        let key = key_of(&env, server, &bucket, victim);
        let mut run = spawn_backup(&env.config);
        run.wait_for("the dump's pause", || dump.pausing.exists());
        // Listings give times to the second, and so does the clock check:
        // be clearly after the start.
        std::thread::sleep(Duration::from_millis(2100));
        server.client().delete(&bucket, &key, None).unwrap();
        assert!(!dump.resumed.exists(), "the dump went on before the delete");
        let done = run.finish();
        let j = &done.json;
        if versioned {
            assert_eq!(done.code, Some(0), "{j:#}\n{}", done.stderr);
            assert_eq!(num(j, "attachments.missing"), 0);
            let set = j["set"].as_str().unwrap();
            let source = manifest(&env, set).attachments.s3.unwrap();
            assert!(source.versioning);
            assert!(source.view_at.is_some());
            let index = common::snapbackup::index_files(&env.set_dir(set));
            assert_eq!(
                index.get(&key),
                Some(&env.store.expected.instances[&victim].sha256)
            );
        } else {
            assert_eq!(done.code, Some(3), "{j:#}\n{}", done.stderr);
            assert_eq!(j["status"], "incomplete");
            assert_eq!(num(j, "attachments.missing"), 1);
            assert_eq!(j["attachments"]["missing_ids"][0], victim);
        }
    }
}

#[test]
fn a_wrong_secret_exits_1_naming_the_endpoint_and_never_the_secret() {
    if !s3server::available("a_wrong_secret_exits_1_naming_the_endpoint_and_never_the_secret") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, bucket) = s3_env(server, false);
    let wrong = "this-is-the-wrong-secret-71c2";
    let file = env.repo.parent().unwrap().join("s3-secret");
    fs::write(&file, format!("{wrong}\n")).unwrap();
    let path = toml::Value::String(file.display().to_string());
    add_config(&env, &format!("\n[s3]\nsecret_access_key_file = {path}\n"));
    let run = env.run_any(&["backup", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&server.endpoint), "{}", run.stderr);
    assert!(run.stderr.contains(&bucket), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was dumped"), "{}", run.stderr);
    assert!(!run.stderr.contains(wrong), "{}", run.stderr);
    assert!(!run.stderr.contains(s3server::SECRET_KEY), "{}", run.stderr);
    assert_eq!(published_sets(&env.repo), Vec::<String>::new());
}

#[test]
fn the_server_stopped_mid_capture_fails_the_run_and_keeps_earlier_sets() {
    if !s3server::available("the_server_stopped_mid_capture_fails_the_run_and_keeps_earlier_sets") {
        return;
    }
    let mut server = S3Server::start(Kind::Seaweed);
    let (env, _bucket) = s3_env(&server, false);
    let first = env.backup(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let earlier = first.json["set"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let dump = with_slow_dump(&env, dir.path());
    let mut run = spawn_backup(&env.config);
    run.wait_for("the dump's pause", || dump.pausing.exists());
    server.stop();
    let done = run.finish();
    assert_eq!(done.code, Some(1), "{:#}\n{}", done.json, done.stderr);
    assert!(done.stderr.contains(&server.endpoint), "{}", done.stderr);
    assert!(!done.stderr.contains(s3server::SECRET_KEY));
    assert_eq!(published_sets(&env.repo), vec![earlier.clone()]);
    assert_eq!(work_dirs(&env.repo), Vec::<String>::new());
    let verify = env.verify(&earlier);
    assert_eq!(verify.code, 0, "{:#}", verify.json);
}

/// Every process's command line, read while the backup is held up in its
/// dump: the S3 secret is in none (nor the database password).
#[test]
fn the_secret_is_in_no_command_line_during_a_backup() {
    if !s3server::available("the_secret_is_in_no_command_line_during_a_backup") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, _bucket) = s3_env(server, false);
    let dir = tempfile::tempdir().unwrap();
    let dump = with_slow_dump(&env, dir.path());
    let mut run = spawn_backup(&env.config);
    let mut seen = 0;
    run.wait_for("the dump's pause", || {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
                seen += 1;
                let text = String::from_utf8_lossy(&cmdline);
                assert!(
                    !text.contains(s3server::SECRET_KEY),
                    "the secret is in the command line of {:?}",
                    entry.path()
                );
            }
        }
        dump.pausing.exists()
    });
    let done = run.finish();
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(seen > 0);
}

/// moto keeps the leading `/` of Kopano's keys (as AWS does): the proof
/// finds every instance under the key with the slash, and the set is
/// complete and verifies.
#[test]
fn keys_with_a_leading_slash_are_found_on_moto() {
    if !s3server::available("keys_with_a_leading_slash_are_found_on_moto") {
        return;
    }
    let server = s3server::shared_moto();
    let (env, _bucket) = s3_env(server, false);
    let run = env.run(&["backup", "--json"]);
    let j = &run.json;
    let referenced = env.store.expected.referenced.len() as u64;
    assert_eq!(num(j, "attachments.referenced"), referenced, "{j:#}");
    assert_eq!(num(j, "attachments.present"), referenced, "{j:#}");
    assert_eq!(num(j, "attachments.missing"), 0);
    assert_eq!(
        num(j, "attachments.extra"),
        u64::from(env.store.spec.extras)
    );
    // Keys with the slash are as restorable as keys without it.
    assert_eq!(j["status"], "complete", "{j:#}\n{}", run.stderr);
    let set = j["set"].as_str().unwrap();
    let index = common::snapbackup::index_files(&env.set_dir(set));
    assert!(!index.is_empty());
    assert!(index.keys().all(|k| k.starts_with('/')), "{index:?}");
    let verify = env.verify(set);
    assert_eq!(verify.code, 0, "{:#}", verify.json);
}

/// How the proxy answers GETs of its victim key.
#[derive(Clone, Copy)]
enum Fault {
    /// 500 InternalError.
    ServerError,
    /// 200 with a body shorter than the listing says.
    ShortBody,
}

/// Between kcbackup and SeaweedFS, a proxy that answers every GET of one
/// key with `fault` and forwards everything else (a stand-in for a failing
/// server: a real one cannot be told to fail one object on demand). Each
/// request goes upstream on a connection of its own.
struct FailingProxy {
    endpoint: String,
    gets_of_victim: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn failing_proxy(upstream: &str, victim: &str, fault: Fault) -> FailingProxy {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    // The request line holds the key percent-encoded, `/` kept.
    let victim = victim.trim_start_matches('/').to_owned();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            let victim = victim.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut client = client;
                loop {
                    let mut head = Vec::new();
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("connection:") {
                            continue;
                        }
                        if line == "\r\n" {
                            head.extend_from_slice(b"connection: close\r\n\r\n");
                            break;
                        }
                        head.extend_from_slice(line.as_bytes());
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let request_line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let path = request_line.split(' ').nth(1).unwrap_or("");
                    let path = path.split('?').next().unwrap_or("");
                    if request_line.starts_with("GET ") && path.ends_with(&victim) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let reply = match fault {
                            Fault::ServerError => {
                                let xml = "<Error><Code>InternalError</Code></Error>";
                                format!(
                                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\n\r\n{xml}",
                                    xml.len()
                                )
                            }
                            Fault::ShortBody => {
                                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nshort".to_owned()
                            }
                        };
                        if client.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                        continue;
                    }
                    let Ok(mut up) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    if up
                        .write_all(&head)
                        .and_then(|()| up.write_all(&body))
                        .is_err()
                    {
                        return;
                    }
                    let mut reply = Vec::new();
                    let _ = up.read_to_end(&mut reply);
                    if client.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    FailingProxy {
        endpoint,
        gets_of_victim: gets,
    }
}

/// Points the env's backups at a [`failing_proxy`] whose victim is the
/// `nth` referenced instance; returns its key.
fn behind_proxy(
    env: &Env,
    server: &S3Server,
    bucket: &str,
    nth: usize,
    fault: Fault,
) -> (String, FailingProxy) {
    let victim = *env.store.expected.referenced.iter().nth(nth).unwrap();
    let key = key_of(env, server, bucket, victim);
    let proxy = failing_proxy(&server.endpoint, &key, fault);
    let endpoint = toml::Value::String(proxy.endpoint.clone());
    add_config(
        env,
        &format!("\n[s3]\nendpoint = {endpoint}\npath_style = true\n"),
    );
    (key, proxy)
}

/// One object that every GET fails for: tried again, then the run fails
/// (exit 1) naming its key, and nothing is published.
#[test]
fn an_object_that_cannot_be_read_fails_the_run_naming_its_key() {
    if !s3server::available("an_object_that_cannot_be_read_fails_the_run_naming_its_key") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, bucket) = s3_env(server, false);
    let (key, proxy) = behind_proxy(&env, server, &bucket, 2, Fault::ServerError);
    let run = env.run_any(&["backup", "--json"]);
    assert_eq!(run.code, 1, "{:#}\n{}", run.json, run.stderr);
    assert!(run.stderr.contains(&format!("{key:?}")), "{}", run.stderr);
    assert!(
        run.stderr.contains("HTTP 500 InternalError"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("after 5 tries"), "{}", run.stderr);
    assert!(!run.stderr.contains(s3server::SECRET_KEY));
    assert_eq!(
        proxy
            .gets_of_victim
            .load(std::sync::atomic::Ordering::SeqCst),
        5
    );
    assert_eq!(published_sets(&env.repo), Vec::<String>::new());
    assert_eq!(work_dirs(&env.repo), Vec::<String>::new());
}

/// An attachment object of `set` (not a dump chunk): its key and file.
fn attachment_object(env: &Env, set: &str) -> (String, std::path::PathBuf) {
    let index = common::snapbackup::index_files(&env.set_dir(set));
    env.object_files()
        .into_iter()
        .find_map(|path| {
            let name = path.file_name()?.to_str()?;
            let sha = name.split('.').next()?;
            let (key, _) = index.iter().find(|(_, s)| s.as_str() == sha)?;
            Some((key.clone(), path.clone()))
        })
        .expect("an attachment object")
}

/// verify reads an s3 set's objects back by its index, as for files: a
/// damaged object is found and named by its key.
#[test]
fn verify_finds_a_damaged_object_of_an_s3_set() {
    if !s3server::available("verify_finds_a_damaged_object_of_an_s3_set") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, _bucket) = s3_env(server, false);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = run.json["set"].as_str().unwrap();
    let (key, damaged) = attachment_object(&env, set);
    support::flip_byte(&damaged, 10);
    let verify = env.verify(set);
    assert_eq!(verify.code, 3, "{:#}", verify.json);
    let problems = support::problems(&verify.json);
    assert!(problems.iter().any(|p| p.contains(&key)), "{problems:?}");
}

/// A body shorter than the listing says is not stored: the set is
/// incomplete and the proof names the object as corrupt.
#[test]
fn a_body_shorter_than_listed_is_corrupt_and_the_set_incomplete() {
    if !s3server::available("a_body_shorter_than_listed_is_corrupt_and_the_set_incomplete") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, bucket) = s3_env(server, false);
    let (key, _proxy) = behind_proxy(&env, server, &bucket, 4, Fault::ShortBody);
    let run = env.backup(&[]);
    let j = &run.json;
    assert_eq!(run.code, 3, "{j:#}");
    assert_eq!(j["status"], "incomplete");
    assert_eq!(num(j, "attachments.corrupt"), 1, "{j:#}");
    assert_eq!(j["attachments"]["corrupt_paths"][0], key.as_str());
    assert_eq!(num(j, "attachments.missing"), 0);
}

/// Rolling verification of an s3 set: a damaged stored object in the
/// backup's slice is found and written again from the bucket.
#[test]
fn rolling_verification_writes_a_damaged_object_again_from_the_bucket() {
    if !s3server::available("rolling_verification_writes_a_damaged_object_again_from_the_bucket") {
        return;
    }
    let server = s3server::shared_seaweed();
    let (env, _bucket) = s3_env(server, false);
    // Every object is in every backup's slice.
    add_config(&env, "\n[verify]\nrolling_days = 1\n");
    let first = env.backup(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let set = first.json["set"].as_str().unwrap();
    let (_key, damaged) = attachment_object(&env, set);
    support::flip_byte(&damaged, 10);
    let second = env.backup(&[]);
    let j = &second.json;
    assert_eq!(second.code, 0, "{j:#}");
    assert_eq!(num(j, "attachments.rolling.rewritten"), 1, "{j:#}");
    let verify = env.verify(j["set"].as_str().unwrap());
    assert_eq!(verify.code, 0, "{:#}", verify.json);
}
