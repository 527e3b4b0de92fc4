//! Hooks, metrics files and pings around real backups (throwaway MariaDB,
//! generated store, the kcbackup binary): what the hooks saw and in which
//! order, the metrics parsed by promtool, the pings a local HTTP server got.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcbackup::generator::GeneratedStore;
use kcbackup::layout::Layout;

/// Pings received: "METHOD PATH BODY".
type Pings = Arc<Mutex<Vec<String>>>;

/// A tiny HTTP server on 127.0.0.1 that records every request and answers 200.
fn ping_server() -> (String, Pings) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let pings: Pings = Arc::default();
    let seen = pings.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut words = request.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            seen.lock().unwrap().push(
                format!("{method} {path} {}", String::from_utf8_lossy(&body))
                    .trim_end()
                    .to_owned(),
            );
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    (url, pings)
}

struct Env {
    dir: tempfile::TempDir,
    store: GeneratedStore,
    repo: PathBuf,
    metrics: PathBuf,
    log: PathBuf,
    url: String,
    pings: Pings,
}

impl Env {
    fn new() -> Env {
        let (dir, store) = common::new_store(Layout::FilesV2, |_| {});
        let repo = dir.path().join("repo");
        let metrics = dir.path().join("textfile");
        fs::create_dir(&metrics).unwrap();
        let log = dir.path().join("hooks.log");
        let (url, pings) = ping_server();
        Env {
            dir,
            store,
            repo,
            metrics,
            log,
            url,
            pings,
        }
    }

    /// A hook that appends one line of what it saw to the log, and its whole
    /// environment to `env-<name>`; `extra` runs after that.
    fn hook(&self, name: &str, extra: &str) -> String {
        let script = format!(
            "printf '%s' \"$0 op=$KCBACKUP_OPERATION set=${{KCBACKUP_SET-unset}} \
             status=${{KCBACKUP_STATUS-unset}} exit=${{KCBACKUP_EXIT_CODE-unset}} \
             repo=$KCBACKUP_REPOSITORY err=${{KCBACKUP_ERROR-unset}}\" \
             | tr '\\n' ' ' | cut -c1-3000 >> {log}; \
             env > {dir}/env-$0; {extra}",
            log = self.log.display(),
            dir = self.dir.path().display(),
        );
        let q = |s: &str| toml::Value::String(s.into()).to_string();
        format!("[\"/bin/sh\", \"-c\", {}, {}]", q(&script), q(name))
    }

    /// Writes the config: the store's, `[mysql]` lines, and observers.
    fn config(&self, mysql: &str, before_extra: &str) -> PathBuf {
        let path = self
            .store
            .write_tool_config(self.dir.path(), &self.repo)
            .unwrap();
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[mysql]\n{mysql}\n\n[metrics]\ntextfile_dir = {metrics:?}\n\n\
             [notify]\nping_url = {url:?}\ntimeout_seconds = 5\n\n[hooks]\n\
             timeout_seconds = 60\nbefore_backup = {before}\nafter_backup = {after}\n\
             on_failure = {fail}\n",
            metrics = self.metrics.display().to_string(),
            url = self.url,
            before = self.hook("before_backup", before_extra),
            after = self.hook("after_backup", ""),
            fail = self.hook("on_failure", ""),
        ));
        fs::write(&path, text).unwrap();
        path
    }

    fn backup(&self, config: &Path) -> Output {
        self.run(config, &["backup", "--json"])
    }

    fn run(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kcbackup"))
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    /// The hook log's lines since the last call.
    fn take_log(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_owned).collect()
    }

    fn take_pings(&self) -> Vec<String> {
        std::mem::take(&mut *self.pings.lock().unwrap())
    }

    fn prom(&self) -> String {
        let path = self.metrics.join("kcbackup_backup.prom");
        let text = fs::read_to_string(&path).unwrap();
        promtool_accepts(&path);
        text
    }
}

fn promtool_accepts(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(path).unwrap())
        .output()
        .expect("promtool is missing: scripts/install-deps installs Debian's prometheus");
    assert!(
        out.status.success(),
        "promtool check metrics {}:\n{}{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(path).unwrap()
    );
}

/// The value of the one sample of `metric` whose labels contain `labels`.
fn value(prom: &str, metric: &str, labels: &str) -> Option<f64> {
    prom.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn hooks_metrics_and_pings_follow_success_failure_and_an_incomplete_set() {
    let env = Env::new();
    let repo = env.repo.display().to_string();

    // 1. Success.
    let good = env.config("", "");
    let out = env.backup(&good);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = json["set"].as_str().unwrap().to_owned();
    assert_eq!(
        env.take_log(),
        [
            format!(
                "before_backup op=backup set=unset status=unset exit=unset repo={repo} err=unset"
            ),
            format!(
                "after_backup op=backup set={set} status=complete exit=0 repo={repo} err=unset"
            ),
        ]
    );
    for hook in ["before_backup", "after_backup"] {
        let seen = fs::read_to_string(env.dir.path().join(format!("env-{hook}"))).unwrap();
        assert!(
            !seen.contains(&env.store.db_password),
            "password in {hook}'s environment"
        );
    }
    let prom = env.prom();
    let success = value(&prom, "kcbackup_last_success_timestamp_seconds", "").unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - success).abs() < 600.0, "{success} vs {now}");
    assert!(
        prom.contains(
            "kcbackup_last_run_timestamp_seconds{operation=\"backup\",result=\"success\"}"
        )
    );
    assert_eq!(value(&prom, "kcbackup_last_exit_code", ""), Some(0.0));
    assert!(value(&prom, "kcbackup_set_bytes", "kind=\"dump\"").unwrap() > 0.0);
    assert!(value(&prom, "kcbackup_set_bytes", "kind=\"added\"").unwrap() > 0.0);
    let referenced = value(&prom, "kcbackup_attachments", "state=\"referenced\"").unwrap();
    assert!(referenced > 0.0);
    assert_eq!(
        value(&prom, "kcbackup_attachments", "state=\"present\""),
        Some(referenced)
    );
    assert_eq!(
        value(&prom, "kcbackup_attachments", "state=\"missing\""),
        Some(0.0)
    );
    assert_eq!(
        value(&prom, "kcbackup_sets", "status=\"complete\""),
        Some(1.0)
    );
    assert!(value(&prom, "kcbackup_repository_bytes", "").unwrap() > 0.0);
    assert!(value(&prom, "kcbackup_duration_seconds", "phase=\"dump\"").is_some());
    assert!(prom.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert_eq!(env.take_pings(), ["POST /check/start", "POST /check/0"]);

    // verify writes its own file; the backup's stays as it is.
    let out = env.run(&good, &["verify", &set]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = env.metrics.join("kcbackup_verify.prom");
    promtool_accepts(&path);
    let vprom = fs::read_to_string(&path).unwrap();
    assert_eq!(
        value(&vprom, "kcbackup_attachments", "state=\"referenced\""),
        Some(referenced)
    );
    assert!(vprom.contains("kcbackup_last_success_timestamp_seconds{operation=\"verify\"}"));
    assert_eq!(env.prom(), prom);
    assert_eq!(
        env.take_log(),
        [] as [String; 0],
        "verify has no hooks of its own"
    );
    assert_eq!(
        env.take_pings(),
        [] as [String; 0],
        "ping_url is the backup's"
    );

    // 2. The database is unreachable (preflight): on_failure, a failure in the metrics, the last
    //    success kept, /1 with the error.
    let bad = env.config("socket = \"/nonexistent/mysqld.sock\"", "");
    let out = env.backup(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = env.take_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[1].starts_with("after_backup op=backup set=unset status=failed exit=1 "),
        "{log:?}"
    );
    assert!(
        log[2].starts_with("on_failure op=backup set=unset status=failed exit=1 "),
        "{log:?}"
    );
    assert!(log[2].contains("nothing was dumped"), "{log:?}");
    let prom = env.prom();
    assert_eq!(
        value(&prom, "kcbackup_last_success_timestamp_seconds", ""),
        Some(success)
    );
    assert!(prom.contains("result=\"failure\"}"), "{prom}");
    assert_eq!(value(&prom, "kcbackup_last_exit_code", ""), Some(1.0));
    let pings = env.take_pings();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(
        pings[1].starts_with("POST /check/1 the database server at /nonexistent"),
        "{pings:?}"
    );

    // 3. An incomplete set (exit 3) is a failure too.
    let (_, info) = env
        .store
        .expected
        .instances
        .iter()
        .find(|(_, i)| i.path.is_some())
        .unwrap();
    fs::remove_file(env.store.attachment_path.join(info.path.as_ref().unwrap())).unwrap();
    let good = env.config("", "");
    let out = env.backup(&good);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = json["set"].as_str().unwrap();
    let log = env.take_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(
        log[2],
        format!(
            "on_failure op=backup set={set} status=incomplete exit=3 repo={repo} err=backup ended with exit code 3"
        )
    );
    let prom = env.prom();
    assert_eq!(
        value(&prom, "kcbackup_last_success_timestamp_seconds", ""),
        Some(success)
    );
    assert!(prom.contains("result=\"incomplete\"}"), "{prom}");
    assert_eq!(
        value(&prom, "kcbackup_attachments", "state=\"missing\""),
        Some(1.0)
    );
    assert_eq!(
        value(&prom, "kcbackup_sets", "status=\"incomplete\""),
        Some(1.0)
    );
    assert_eq!(
        env.take_pings().last().map(String::as_str),
        Some("POST /check/3 backup ended with exit code 3")
    );
    let mut names: Vec<_> = fs::read_dir(&env.metrics)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["kcbackup_backup.prom", "kcbackup_verify.prom"],
        "one file per operation, no temporary left"
    );
}

#[test]
fn a_failing_before_hook_aborts_with_exit_1_naming_it_and_its_output() {
    let env = Env::new();
    let config = env.config("", "echo disk-not-mounted >&2; exit 7");
    let out = env.backup(&config);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("hook before_backup") && err.contains("disk-not-mounted"),
        "{err}"
    );
    assert!(err.contains("exit status: 7"), "{err}");
    let sets = fs::read_dir(env.repo.join("sets")).map_or(0, |d| d.count());
    assert_eq!(sets, 0, "a set was written");
    let log = env.take_log();
    assert_eq!(log.len(), 2, "after_backup must not run: {log:?}");
    assert!(
        log[1].starts_with("on_failure op=backup set=unset status=failed exit=1 "),
        "{log:?}"
    );
    assert!(log[1].contains("disk-not-mounted"), "{log:?}");
    assert_eq!(
        env.take_pings()[1..],
        ["POST /check/1".to_owned() + " " + &err_line(&err)]
    );
}

/// The ping body is the error as kcbackup prints it, without the prefix.
fn err_line(stderr: &str) -> String {
    let start = stderr.find("kcbackup: hook before_backup (").unwrap();
    stderr[start..]
        .trim_start_matches("kcbackup: ")
        .trim_end()
        .to_owned()
}

#[test]
fn sigterm_runs_on_failure_and_exits_143() {
    let env = Env::new();
    let ready = env.dir.path().join("ready");
    let config = env.config("", &format!("touch {}; sleep 30", ready.display()));
    let child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the before hook never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let log = env.take_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[1].starts_with("on_failure op=backup set=unset status=failed exit=143 "),
        "{log:?}"
    );
    let prom = env.prom();
    assert_eq!(value(&prom, "kcbackup_last_exit_code", ""), Some(143.0));
    assert_eq!(
        value(&prom, "kcbackup_last_success_timestamp_seconds", ""),
        None
    );
}

#[test]
fn drill_runs_its_hooks_pings_its_own_url_and_writes_its_metrics() {
    let env = Env::new();
    let config = env.config("", "");
    assert_eq!(env.backup(&config).status.code(), Some(0));
    env.take_log();
    env.take_pings();
    let mut text = fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[notify]\n",
        &format!("[notify]\ndrill_ping_url = \"{}-drill\"\n", env.url),
    );
    text.push_str(&format!(
        "before_drill = {}\nafter_drill = {}\n",
        env.hook("before_drill", ""),
        env.hook("after_drill", "")
    ));
    fs::write(&config, text).unwrap();
    let scratch = env.dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let out = env.run(&config, &["drill", "--scratch", scratch.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = env.take_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("before_drill op=drill set=unset "),
        "{log:?}"
    );
    assert!(log[1].starts_with("after_drill op=drill set="), "{log:?}");
    assert!(log[1].contains(" status=complete exit=0 "), "{log:?}");
    assert_eq!(
        env.take_pings(),
        ["POST /check-drill/start", "POST /check-drill/0"]
    );
    let path = env.metrics.join("kcbackup_drill.prom");
    promtool_accepts(&path);
    let prom = fs::read_to_string(&path).unwrap();
    assert!(value(&prom, "kcbackup_drill_recovery_seconds", "").unwrap() > 0.0);
    assert!(
        value(
            &prom,
            "kcbackup_duration_seconds",
            "phase=\"database_load\""
        )
        .is_some()
    );
}

#[test]
fn list_and_verify_need_only_the_repository_but_backup_needs_server_cfg() {
    let env = Env::new();
    let config = env.config("", "");
    assert_eq!(env.backup(&config).status.code(), Some(0));
    let bare = env.dir.path().join("bare.toml");
    fs::write(
        &bare,
        "[kopano]\nserver_cfg = \"/nonexistent/server.cfg\"\n",
    )
    .unwrap();
    let repo = env.repo.to_str().unwrap();
    for args in [["list", "--json"], ["verify", "latest"]] {
        let out = env.run(&bare, &[&["--repository", repo][..], &args[..]].concat());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let out = env.run(&bare, &["--repository", repo, "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set = &json[0];
    let logical = set["logical_bytes"].as_u64().unwrap();
    let added = set["added_bytes"].as_u64().unwrap();
    assert!(
        logical > 0 && added > set["bytes"].as_u64().unwrap(),
        "{set}"
    );
    let out = env.run(&bare, &["--repository", repo, "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text.lines().last().unwrap();
    assert!(
        total.starts_with("total: 1 sets (1 complete), repository "),
        "{text}"
    );

    let out = env.run(
        &bare,
        &["--repository", repo, "list", "--long", "latest", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["logical_bytes"].as_u64(), Some(logical));
    assert_eq!(stats["added_bytes"].as_u64(), Some(added));
    assert!(stats["objects"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["phases"].as_array().is_some_and(|p| !p.is_empty()),
        "{stats}"
    );
    let out = env.run(&bare, &["--repository", repo, "list", "--long", "latest"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dedup ratio"));

    let out = env.run(&bare, &["--repository", repo, "backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.cfg not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigterm_during_the_dump_runs_on_failure_with_exit_143() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // A stand-in for the dump program that holds the backup in its dump
    // phase until the signal: the test needs the moment, not the data.
    let ready = env.dir.path().join("dump-started");
    let slow = env.dir.path().join("slow-dump");
    fs::write(
        &slow,
        format!(
            "#!/bin/sh\ntouch {}\nsleep 30\nexec mariadb-dump \"$@\"\n",
            ready.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&slow, fs::Permissions::from_mode(0o755)).unwrap();
    let config = env.config(
        &format!("dump_command = {:?}", slow.display().to_string()),
        "",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", config.to_str().unwrap(), "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let log = env.take_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("before_backup "), "{log:?}");
    assert!(
        log[1].starts_with("after_backup op=backup set=unset status=failed exit=143 "),
        "{log:?}"
    );
    assert!(
        log[2].starts_with("on_failure op=backup set=unset status=failed exit=143 "),
        "{log:?}"
    );
    assert!(log[2].contains("interrupted by SIGTERM"), "{log:?}");
    let prom = env.prom();
    assert_eq!(value(&prom, "kcbackup_last_exit_code", ""), Some(143.0));
    assert_eq!(
        env.take_pings()
            .last()
            .map(|p| p.starts_with("POST /check/143 ")),
        Some(true)
    );
}

#[test]
fn prune_writes_its_metrics_on_success_and_keeps_the_last_success_on_failure() {
    let env = Env::new();
    let config = env.config("", "");
    assert_eq!(env.backup(&config).status.code(), Some(0));
    assert_eq!(env.backup(&config).status.code(), Some(0));
    let out = env.run(&config, &["prune", "--keep-last", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = env.metrics.join("kcbackup_prune.prom");
    promtool_accepts(&path);
    let prom = fs::read_to_string(&path).unwrap();
    let success = value(&prom, "kcbackup_last_success_timestamp_seconds", "").unwrap();
    assert!(
        value(
            &prom,
            "kcbackup_last_run_timestamp_seconds",
            "result=\"success\""
        )
        .is_some()
    );
    assert_eq!(
        value(&prom, "kcbackup_prune_removed_sets", "operation=\"prune\""),
        Some(1.0)
    );
    assert_eq!(
        value(&prom, "kcbackup_prune_deleted_objects", ""),
        report["objects_deleted"].as_f64()
    );
    assert_eq!(
        value(&prom, "kcbackup_prune_reclaimed_bytes", ""),
        report["bytes_reclaimed"].as_f64()
    );
    assert!(value(&prom, "kcbackup_prune_reclaimed_bytes", "").unwrap() > 0.0);
    assert!(value(&prom, "kcbackup_duration_seconds", "phase=\"total\"").is_some());
    assert_eq!(
        value(&prom, "kcbackup_sets", "status=\"complete\""),
        Some(1.0)
    );
    assert!(value(&prom, "kcbackup_repository_bytes", "").unwrap() > 0.0);
    // A refused prune (no rule) still writes the file, keeping the success.
    let out = env.run(&config, &["prune", "--keep-last", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    promtool_accepts(&path);
    let prom = fs::read_to_string(&path).unwrap();
    assert_eq!(
        value(&prom, "kcbackup_last_success_timestamp_seconds", ""),
        Some(success)
    );
    assert!(
        value(
            &prom,
            "kcbackup_last_run_timestamp_seconds",
            "result=\"failure\""
        )
        .is_some()
    );
    assert_eq!(value(&prom, "kcbackup_last_exit_code", ""), Some(2.0));
}
