//! Whole commands on a repository on S3 (a real SeaweedFS, from
//! `tests/support/s3server.rs`): backup, verify, list, drill, prune; copy
//! local to S3 and back, verified on each target; a killed copy to S3
//! resumed; a flipped byte found by verify; the server stopped in the
//! middle of a backup; a dead run's lock taken over only through `unlock`.

mod common;
mod faultkit;
mod support;

use std::fs;
use std::path::PathBuf;

use common::is_stopped;
use faultkit::{Bg, Fx, HeldDump, Out, V1, published_sets};
use kcbackup::commands::PAUSE_ENV;
use kcbackup::generator::add_attachments;
use kcbackup::s3::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::s3server::{ACCESS_KEY, Kind, S3Server, SECRET_KEY, available, shared_seaweed};

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A fixture with `[repositories.s3]` on a new bucket of `server` and
/// `[repositories.local2]` beside the fixture's own repository.
struct S3Fx {
    fx: Fx,
    bucket: String,
    config: PathBuf,
    local2: PathBuf,
}

impl S3Fx {
    fn new(server: &S3Server, extra: &str) -> S3Fx {
        Self::with(server, extra, "timeout_s = 10\n")
    }

    /// With `connection` (timeout_s, retries) in `[repositories.s3]`.
    fn with(server: &S3Server, extra: &str, connection: &str) -> S3Fx {
        let fx = Fx::new(V1, |_| {});
        let bucket = server.bucket("kcrepo");
        let key = fx.dir.path().join("s3.key");
        fs::write(&key, format!("{SECRET_KEY}\n")).unwrap();
        let local2 = fx.dir.path().join("local2");
        let text = format!(
            "{extra}\n[repositories.s3]\nurl = {}\nendpoint = {}\naccess_key_id = {}\n\
             secret_access_key_file = {}\n{connection}\n[repositories.local2]\npath = {}\n",
            toml_string(&format!("s3://{bucket}/kc")),
            toml_string(&server.endpoint),
            toml_string(ACCESS_KEY),
            toml_string(&key.display().to_string()),
            toml_string(&local2.display().to_string()),
        );
        let config = fx.config_with("s3", &fx.repo, &text);
        S3Fx {
            fx,
            bucket,
            config,
            local2,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.fx.run_with(&self.config, args)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        out.json()
    }

    /// The S3 requests the run reported at -v.
    fn requests(out: &Out) -> String {
        out.stderr
            .lines()
            .filter(|l| l.contains("S3 requests to"))
            .map(|l| {
                l.split_once("S3 requests to")
                    .map_or(l, |(_, r)| r)
                    .trim()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every object key of the repository on the server.
    fn keys(&self, client: &Client, under: &str) -> Vec<(String, u64)> {
        let mut keys = Vec::new();
        client
            .list_v2(&self.bucket, &format!("kc/{under}"), &mut |i| {
                keys.push((i.key, i.size));
                Ok(())
            })
            .unwrap();
        keys
    }
}

fn s3_sets(f: &S3Fx) -> Vec<String> {
    let list = f.ok(&["--repository", "s3", "list", "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn backup_verify_drill_and_prune_on_an_s3_repository() {
    if !available("backup_verify_drill_and_prune_on_an_s3_repository") {
        return;
    }
    let mut f = S3Fx::new(shared_seaweed(), "");
    let first = f.ok(&["--repository", "s3", "backup", "--json"])["set"]
        .as_str()
        .unwrap()
        .to_owned();
    add_attachments(common::server(), &mut f.fx.store, 4, 3).expect("adding");
    let out = f.run(&["-v", "--repository", "s3", "backup", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let second = out.set().unwrap();
    let requests = S3Fx::requests(&out);
    eprintln!("requests of the second (nightly) backup: {requests}");
    // LIST: the sets and the lock, never the objects.
    assert!(!requests.is_empty(), "{}", out.stderr);
    assert!(
        requests.matches("(objects/ 0)").count() == requests.matches("LIST").count(),
        "a nightly backup does not list the objects: {requests}"
    );
    assert_eq!(s3_sets(&f), vec![first.clone(), second.clone()]);
    for set in [&first, &second] {
        let v = f.run(&["--repository", "s3", "verify", set, "--json"]);
        assert_eq!(v.code, Some(0), "verify {set}: {}", v.stderr);
    }
    let scratch = f.fx.dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let drill = f.run(&[
        "--repository",
        "s3",
        "drill",
        "latest",
        "--json",
        "--scratch",
        &scratch.display().to_string(),
    ]);
    assert_eq!(drill.code, Some(0), "drill: {}", drill.stderr);
    assert_eq!(drill.json()["ok"], true, "{}", drill.stdout);

    let pruned = f.ok(&["--repository", "s3", "prune", "--keep-last", "1", "--json"]);
    assert!(pruned.to_string().contains(&first), "{pruned}");
    assert_eq!(s3_sets(&f), vec![second.clone()]);
    let v = f.run(&["--repository", "s3", "verify", &second]);
    assert_eq!(v.code, Some(0), "verify after prune: {}", v.stderr);
    let client = shared_seaweed().client();
    let left: Vec<String> = f
        .keys(&client, "")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains(&first) || k.contains("/.locks/") || k.contains("/.trash/"))
        .collect();
    assert!(left.is_empty(), "left on the server: {left:?}");
}

#[test]
fn copies_local_to_s3_and_back_verify_on_each_target_and_a_killed_copy_resumes() {
    if !available("copies_local_to_s3_and_back_verify_on_each_target_and_a_killed_copy_resumes") {
        return;
    }
    let f = S3Fx::new(shared_seaweed(), "");
    let set = f.fx.backup_ok();
    // Killed once its first objects are on the server.
    let mut cmd =
        f.fx.command(&f.config, &["copy", &set, "--to", "s3", "--json"]);
    cmd.env(PAUSE_ENV, "copy-objects-first");
    let mut bg = Bg::spawn(cmd, false);
    let pid = bg.child.id();
    assert!(
        bg.wait_for(|| is_stopped(pid)),
        "copy never reached its first objects"
    );
    bg.signal(Signal::SIGKILL);
    assert_eq!(bg.finish().signal, Some(9));
    // Listed after the kill: a worker's upload may land while the copy is
    // paused, and what the next copy finds is what is there once it died.
    let client = shared_seaweed().client();
    let landed: Vec<(String, u64)> = f.keys(&client, "objects/");
    assert!(!landed.is_empty());
    assert!(
        f.keys(&client, "sets/").is_empty(),
        "nothing of the set on the server yet"
    );

    // The dead copy's lock is named, and only `unlock` takes it.
    let refused = f.run(&["copy", &set, "--to", "s3"]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("that process is gone"),
        "{}",
        refused.stderr
    );
    let un = f.ok(&["--repository", "s3", "unlock", "--json"]);
    assert_eq!(un["removed"].as_array().unwrap().len(), 1, "{un}");

    let out = f.run(&["-v", "copy", &set, "--to", "s3", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let next = out.json();
    let landed_bytes: u64 = landed.iter().map(|(_, n)| n).sum();
    let all_bytes: u64 = f.keys(&client, "objects/").iter().map(|(_, n)| n).sum();
    eprintln!(
        "resumed copy to S3: {} objects had landed; sent {} bytes ({}); requests {}",
        landed.len(),
        next["bytes_sent"],
        next["objects_sent"],
        S3Fx::requests(&out)
    );
    assert_eq!(
        next["objects_present"].as_u64(),
        Some(landed.len() as u64),
        "{next}"
    );
    assert_eq!(
        next["bytes_sent"].as_u64().unwrap(),
        all_bytes - landed_bytes + next["sets"][0]["file_bytes"].as_u64().unwrap(),
        "only the remainder: {next}"
    );
    let v = f.run(&["--repository", "s3", "verify", &set]);
    assert_eq!(v.code, Some(0), "verify on S3: {}", v.stderr);

    // S3 to local, then verify and drill there.
    let back = f.ok(&[
        "--repository",
        "s3",
        "copy",
        "latest",
        "--to",
        "local2",
        "--json",
    ]);
    assert_eq!(back["sets"][0]["outcome"], "copied", "{back}");
    assert_eq!(published_sets(&f.local2), vec![set.clone()]);
    let v = f.run(&["--repository", "local2", "verify", &set]);
    assert_eq!(v.code, Some(0), "verify on local2: {}", v.stderr);
    let scratch = f.fx.dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let drill = f.run(&[
        "--repository",
        "local2",
        "drill",
        &set,
        "--json",
        "--scratch",
        &scratch.display().to_string(),
    ]);
    assert_eq!(drill.code, Some(0), "drill on local2: {}", drill.stderr);
}

#[test]
fn a_flipped_byte_in_a_stored_object_on_the_server_is_found_by_verify() {
    if !available("a_flipped_byte_in_a_stored_object_on_the_server_is_found_by_verify") {
        return;
    }
    let f = S3Fx::new(shared_seaweed(), "");
    let set = f.ok(&["--repository", "s3", "backup", "--json"])["set"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = shared_seaweed().client();
    let (key, _) = f
        .keys(&client, "objects/")
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut client.get(&f.bucket, &key, None).unwrap().reader,
        &mut bytes,
    )
    .unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    client.put_bytes(&f.bucket, &key, &bytes).unwrap();
    let v = f.run(&["--repository", "s3", "verify", &set, "--json"]);
    assert_eq!(v.code, Some(3), "{}", v.stderr);
    let sha = key.rsplit('/').next().unwrap().trim_end_matches(".zst");
    assert!(
        v.stdout.contains(sha),
        "the finding names the object: {}",
        v.stdout
    );
}

#[test]
fn the_server_stopped_mid_backup_fails_it_publishes_nothing_and_earlier_sets_verify() {
    if !available(
        "the_server_stopped_mid_backup_fails_it_publishes_nothing_and_earlier_sets_verify",
    ) {
        return;
    }
    let server = S3Server::start(Kind::Seaweed);
    let dir = tempfile::tempdir().unwrap();
    let held = HeldDump::new(dir.path());
    let f = S3Fx::with(&server, &held.toml(), "timeout_s = 2\nretries = 1\n");
    fs::write(&held.release, "").unwrap();
    let first = f.ok(&["--repository", "s3", "backup", "--json"])["set"]
        .as_str()
        .unwrap()
        .to_owned();
    held.reset();
    let mut bg =
        f.fx.spawn_with(&f.config, &["--repository", "s3", "backup", "--json"]);
    assert!(
        bg.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );
    // The server stops answering (its process frozen), then the dump goes on.
    kill(Pid::from_raw(server.pid as i32), Signal::SIGSTOP).unwrap();
    fs::write(&held.release, "").unwrap();
    let out = bg.finish();
    kill(Pid::from_raw(server.pid as i32), Signal::SIGCONT).unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    out.assert_one_message("backup with the server stopped");
    assert_eq!(s3_sets(&f), vec![first.clone()], "nothing new published");
    let v = f.run(&["--repository", "s3", "verify", &first]);
    assert_eq!(v.code, Some(0), "the earlier set: {}", v.stderr);
    // Its lock object may have outlived it (the server was gone): the
    // next backup names it, `unlock` takes it, then all is well.
    let again = f.run(&["--repository", "s3", "backup", "--json"]);
    if again.code != Some(0) {
        assert!(again.stderr.contains("unlock"), "{}", again.stderr);
        f.ok(&["--repository", "s3", "unlock", "--json"]);
        f.ok(&["--repository", "s3", "backup", "--json"]);
    }
    let sets = s3_sets(&f);
    assert_eq!(sets.len(), 2, "{sets:?}");
}

/// Not a test: figures. `cargo test --test s3_backup -- --ignored bench --nocapture`
/// prints a full and a nightly backup into the local repository and into
/// the S3 one, a copy of the local repository into a fresh S3 repository,
/// their times and the S3 requests each made.
#[test]
#[ignore]
fn bench_s3_repository_against_local() {
    if !available("bench_s3_repository_against_local") {
        return;
    }
    let mut f = S3Fx::new(shared_seaweed(), "");
    let timed = |f: &S3Fx, args: &[&str]| {
        let started = std::time::Instant::now();
        let out = f.run(args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        (started.elapsed().as_secs_f64(), S3Fx::requests(&out))
    };
    let (local_full, _) = timed(&f, &["backup", "--json"]);
    let (s3_full, s3_full_req) = timed(&f, &["-v", "--repository", "s3", "backup", "--json"]);
    add_attachments(common::server(), &mut f.fx.store, 20, 5).expect("adding");
    let (local_night, _) = timed(&f, &["backup", "--json"]);
    let (s3_night, s3_night_req) = timed(&f, &["-v", "--repository", "s3", "backup", "--json"]);
    // The local repository (two sets) into a fresh bucket.
    let g = S3Fx::new(shared_seaweed(), "");
    let copy_config = g.config.clone();
    let started = std::time::Instant::now();
    let out = f.fx.run_with(
        &copy_config,
        &[
            "-v",
            "--repository",
            &f.fx.repo.display().to_string(),
            "copy",
            "--all",
            "--to",
            "s3",
            "--json",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let copy_s = started.elapsed().as_secs_f64();
    let copied = out.json();
    // rclone copy of the same repository directory, when installed
    // (credentials in its environment, not its argv).
    let rclone = std::process::Command::new("rclone")
        .arg("version")
        .output()
        .is_ok()
        .then(|| {
            let server = shared_seaweed();
            let bucket = server.bucket("kcrclone");
            let started = std::time::Instant::now();
            let out = std::process::Command::new("rclone")
                .args(["copy", "--transfers", "4", "--checkers", "8"])
                .arg(&f.fx.repo)
                .arg(format!(":s3:{bucket}/kc"))
                .env("RCLONE_S3_PROVIDER", "Other")
                .env("RCLONE_S3_ENDPOINT", &server.endpoint)
                .env("RCLONE_S3_ACCESS_KEY_ID", ACCESS_KEY)
                .env("RCLONE_S3_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("RCLONE_S3_FORCE_PATH_STYLE", "true")
                .env("RCLONE_CONFIG", "/dev/null")
                .env_remove("AWS_CA_BUNDLE")
                .output()
                .expect("rclone");
            assert!(
                out.status.success(),
                "rclone: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed().as_secs_f64()
        });
    println!("backup, local repository: full {local_full:.2}s, nightly {local_night:.2}s");
    println!("backup, S3 repository:    full {s3_full:.2}s, nightly {s3_night:.2}s");
    println!("  requests, full:    {s3_full_req}");
    println!("  requests, nightly: {s3_night_req}");
    println!(
        "copy --all local -> S3: {copy_s:.2}s, {} bytes, {} objects; requests {}",
        copied["bytes_sent"],
        copied["objects_sent"],
        S3Fx::requests(&out)
    );
    match rclone {
        Some(s) => println!("rclone copy of the same repository directory: {s:.2}s"),
        None => println!("rclone is not installed: no comparison"),
    }
}
