//! `kcbackup upgrade prepare` and `finish` against a generated store in the
//! sandboxed MariaDB, with the `db` plugin's directory added by the generator.
//!
//! STAND-INS: Kopano's daemons cannot be installed here (not in Debian), so
//! every Kopano service is a stand-in: a real long-running process (`sleep`)
//! managed by a small test service script with pid files, through
//! `service_manager = "command"`. The MTA is a stand-in too, except in
//! `the_real_postfix_...`, where the script hands `postfix` to Debian's real
//! postfix and its init script (`scripts/install-deps --tests` installs it
//! where no other MTA is; the test says SKIPPED without it). The script logs
//! each start and stop; the dump command is a wrapper around the real
//! mariadb-dump that logs when the dump begins and which services were
//! still running then.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcbackup::census::{class_name, relation_name, store_type_name};
use kcbackup::generator::GeneratedStore;
use kcbackup::generator::users::{Directory, add_directory};
use kcbackup::layout::Layout;
use kcbackup::repo::manifest::Manifest;
use serde_json::Value;

/// Installed stand-ins; kopano-gateway, -ical and -monitor are "not installed".
const INSTALLED: &[&str] = &[
    "postfix",
    "kopano-spooler",
    "kopano-server",
    "kopano-dagent",
    "kopano-search",
];
const STOP_ORDER: &[&str] = INSTALLED;
/// A web server stand-in: finish restarts it (php-mapi changes with upgrades).
const WEB_SERVER: &str = "apache2";
const START_ORDER: &[&str] = &[
    "kopano-server",
    "kopano-spooler",
    "kopano-dagent",
    "kopano-search",
    "postfix",
];

const SERVICE_SCRIPT: &str = r#"#!/bin/sh
# Test service manager: $1 state dir, $2 service, $3 action (LSB status codes).
d=$1; n=$2; a=$3
[ -e "$d/installed/$n" ] || exit 4
# a real service: its own init script (LSB codes too)
if [ -e "$d/real/$n" ]; then
  case $a in start|stop) echo "$a $n" >> "$d/log" ;; esac
  exec "/etc/init.d/$n" "$a" >/dev/null 2>&1
fi
pid=$(cat "$d/$n.pid" 2>/dev/null)
# a zombie nobody reaped yet is not running
running() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ! grep -q ') Z' "/proc/$pid/stat"; }
case $a in
status) running && exit 0; exit 3 ;;
start) echo "start $n" >> "$d/log"; running && exit 0
  sleep 100000 >/dev/null 2>&1 </dev/null & echo $! > "$d/$n.pid"; exit 0 ;;
stop) echo "stop $n" >> "$d/log"; [ -e "$d/$n.nostop" ] && exit 0
  running && kill "$pid"; exit 0 ;;
esac
exit 2
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
    store: GeneratedStore,
    truth: Directory,
    state: PathBuf,
    script: PathBuf,
    repo: PathBuf,
    config: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::build(&[])
    }

    /// The fixture with `real` services run by their own init scripts.
    fn build(real: &[&str]) -> Fixture {
        let (store_dir, mut store) = common::new_store(Layout::FilesV1 { l1: 10, l2: 20 }, |_| {});
        let truth = add_directory(common::server(), &mut store).expect("adding the directory");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("services");
        fs::create_dir_all(state.join("installed")).unwrap();
        fs::create_dir_all(state.join("real")).unwrap();
        for name in real {
            fs::write(state.join("real").join(name), "").unwrap();
        }
        for name in INSTALLED.iter().chain(&[WEB_SERVER]) {
            fs::write(state.join("installed").join(name), "").unwrap();
        }
        // The new packages' examples: the live server.cfg plus one new option.
        let examples = dir.path().join("example-config");
        fs::create_dir(&examples).unwrap();
        let mut example = fs::read_to_string(&store.server_cfg).unwrap();
        example.push_str("\n# new in this version\nbrand_new_option = yes\n");
        fs::write(examples.join("server.cfg"), example).unwrap();
        let script = dir.path().join("service");
        write_executable(&script, SERVICE_SCRIPT);
        let pids: Vec<String> = INSTALLED
            .iter()
            .map(|n| format!("'{}'", state.join(format!("{n}.pid")).display()))
            .collect();
        let dump = dir.path().join("dump");
        write_executable(
            &dump,
            &format!(
                "#!/bin/bash\nd='{d}'\necho dump-begin >> \"$d/log\"\n\
                 for p in {pids}; do pid=$(cat \"$p\" 2>/dev/null); \
                 [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null && \
                 ! grep -q ') Z' /proc/$pid/stat && echo \"running-at-dump $p\" >> \"$d/log\"; done\n\
                 for r in \"$d\"/real/*; do [ -e \"$r\" ] && /etc/init.d/\"${{r##*/}}\" status >/dev/null 2>&1 && \
                 echo \"running-at-dump ${{r##*/}}\" >> \"$d/log\"; done\n\
                 [ -e \"$d/dump-fail\" ] && {{ echo 'dump made to fail' >&2; exit 1; }}\n\
                 [ -e \"$d/dump-pause\" ] && {{ : > \"$d/dump-started\"; exec sleep 60; }}\n\
                 exec mariadb-dump \"$@\"\n",
                d = state.display(),
                pids = pids.join(" "),
            ),
        );
        let repo = dir.path().join("repo");
        let config = dir.path().join("kcbackup.toml");
        let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let text = format!(
            "{}\n[mysql]\ndump_command = {}\n\n[upgrade]\nservice_manager = \"command\"\n\
             command = [{}, {}, \"{{service}}\", \"{{action}}\"]\nstop_timeout_s = 20\nexample_config_dir = {}\n",
            store.tool_config(&repo, "none"),
            q(&dump),
            q(&script),
            q(&state),
            q(&examples),
        );
        fs::write(&config, text).unwrap();
        let f = Fixture {
            _dir: dir,
            _store_dir: store_dir,
            store,
            truth,
            state,
            script,
            repo,
            config,
        };
        for name in INSTALLED.iter().chain(&[WEB_SERVER]) {
            assert!(f.service(name, "start").success());
        }
        fs::write(f.state.join("log"), "").unwrap();
        f
    }

    fn service(&self, name: &str, action: &str) -> std::process::ExitStatus {
        // A test running in parallel may have forked while our script was
        // still open for writing: ETXTBSY until that child execs.
        for _ in 0..100 {
            match Command::new(&self.script)
                .args([self.state.to_str().unwrap(), name, action])
                .status()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
        panic!("{} stayed busy", self.script.display());
    }

    fn running(&self, name: &str) -> bool {
        self.service(name, "status").code() == Some(0)
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.state.join("log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn clear_log(&self) {
        fs::write(self.state.join("log"), "").unwrap();
    }

    fn kcbackup(&self, args: &[&str]) -> (i32, Value, String) {
        let mut argv = vec!["--config", self.config.to_str().unwrap()];
        argv.extend(args);
        let out = common::kcbackup(&argv);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), json, stderr)
    }

    fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    fn assert_all_running(&self) {
        for name in INSTALLED {
            assert!(self.running(name), "{name} is not running again");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for name in INSTALLED.iter().chain(&[WEB_SERVER]) {
            let _ = fs::remove_file(self.state.join(format!("{name}.nostop")));
            let _ = self.service(name, "stop");
        }
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn prepare_stops_in_order_backs_up_a_quiescent_database_and_finish_finds_a_missing_user() {
    let f = Fixture::new();
    let (code, report, stderr) = f.kcbackup(&["upgrade", "prepare", "--json"]);
    assert_eq!(code, 0, "{stderr}");

    // The manual's stop order; what is not installed is skipped and said so.
    assert_eq!(f.lines_with("stop "), names(STOP_ORDER));
    assert_eq!(report["stopped"], serde_json::json!(STOP_ORDER));
    let skipped: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["done"].as_str().unwrap().starts_with("not installed"))
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["kopano-gateway", "kopano-ical", "kopano-monitor"]);

    // Every service was down before the dump began, and stays down.
    let log = f.log();
    let begin = log.iter().position(|l| l == "dump-begin").expect("no dump");
    assert_eq!(
        log[..begin]
            .iter()
            .filter(|l| l.starts_with("stop "))
            .count(),
        STOP_ORDER.len()
    );
    assert!(
        !log.iter().any(|l| l.starts_with("running-at-dump")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("start ")), "{log:?}");
    for name in INSTALLED {
        assert!(!f.running(name), "{name} runs after prepare");
    }

    // A verified, complete set tagged pre-upgrade, marked as taken cold.
    let set = report["set"].as_str().unwrap();
    let manifest = Manifest::load(&f.repo.join("sets").join(set)).unwrap();
    assert_eq!(manifest.tag.as_deref(), Some("pre-upgrade"));
    let mark = manifest.upgrade.expect("no upgrade mark in the manifest");
    assert!(mark.services_stopped);
    assert_eq!(mark.stopped, names(STOP_ORDER));
    assert!(report["verified_files"].as_u64().unwrap() > 0);
    let (code, _, stderr) = f.kcbackup(&["verify", set, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        report["rollback_command"]
            .as_str()
            .unwrap()
            .ends_with(&format!("upgrade rollback {set} --yes")),
        "{report}"
    );

    // The census is the generator's truth.
    let census = &report["census"];
    let users: BTreeMap<String, u64> = f
        .truth
        .users
        .iter()
        .map(|(c, n)| (class_name(*c), *n))
        .collect();
    assert_eq!(counts(&census["users"]), users);
    let relations: BTreeMap<String, u64> = f
        .truth
        .relations
        .iter()
        .map(|(t, n)| (relation_name(*t), *n))
        .collect();
    assert_eq!(counts(&census["relations"]), relations);
    let stores: BTreeMap<String, u64> = f
        .truth
        .stores
        .iter()
        .map(|(t, n)| (store_type_name(*t), *n))
        .collect();
    assert_eq!(counts(&census["stores"]), stores);
    assert_eq!(
        census["version"].as_str(),
        Some(f.store.expected.kopano_version.to_string().as_str())
    );
    assert_eq!(census["user_safe_mode"], false);
    assert!(
        f.repo
            .join("censuses")
            .join(format!("{set}.json"))
            .is_file()
    );

    // The "upgrade" loses a user and a group.
    let db = &f.store.database;
    let user = f.truth.added_active_users[0];
    common::query(&format!("DELETE FROM `{db}`.users WHERE id = {user}"));
    common::query(&format!(
        "DELETE FROM `{db}`.users WHERE objectclass = 196609 LIMIT 1"
    ));
    f.clear_log();
    let (code, finish, stderr) = f.kcbackup(&["upgrade", "finish", "--json"]);
    assert_eq!(code, 3, "{stderr}\n{finish}");
    let mut started = names(START_ORDER);
    started.push(WEB_SERVER.into());
    assert_eq!(f.lines_with("start "), started);
    assert_eq!(
        f.lines_with("stop "),
        [WEB_SERVER],
        "the web server is restarted"
    );
    f.assert_all_running();
    assert!(f.running(WEB_SERVER));
    assert_eq!(
        finish["configs"],
        serde_json::json!([{"file": "server.cfg", "new_options": ["brand_new_option"], "unknown_options": []}])
    );
    let changed: Vec<(&str, u64, u64)> = finish["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["item"].as_str().unwrap(),
                c["before"].as_u64().unwrap(),
                c["after"].as_u64().unwrap(),
            )
        })
        .collect();
    let active = f.truth.users[&0x10001];
    let groups = f.truth.users[&0x30001];
    assert_eq!(
        changed,
        [
            ("active users", active, active - 1),
            ("groups", groups, groups - 1)
        ]
    );
    let notes = finish["notes"].to_string();
    assert!(notes.contains("did not advance"), "{notes}");
}

#[test]
fn a_failing_backup_starts_every_stopped_service_again_in_start_order() {
    let f = Fixture::new();
    fs::write(f.state.join("dump-fail"), "").unwrap();
    let (code, _, stderr) = f.kcbackup(&["upgrade", "prepare"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("started again"), "{stderr}");
    assert_eq!(f.lines_with("stop "), names(STOP_ORDER));
    assert_eq!(f.lines_with("start "), names(START_ORDER));
    f.assert_all_running();
    assert!(common::snapbackup::published_sets(&f.repo).is_empty());
}

#[test]
fn a_service_that_will_not_stop_starts_the_others_again() {
    let f = Fixture::new();
    let text = fs::read_to_string(&f.config).unwrap();
    fs::write(
        &f.config,
        text.replace("stop_timeout_s = 20", "stop_timeout_s = 1"),
    )
    .unwrap();
    fs::write(f.state.join("kopano-server.nostop"), "").unwrap();
    let (code, _, stderr) = f.kcbackup(&["upgrade", "prepare"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("kopano-server is still running"),
        "{stderr}"
    );
    assert_eq!(
        f.lines_with("stop "),
        ["postfix", "kopano-spooler", "kopano-server"]
    );
    assert_eq!(f.lines_with("start "), ["kopano-spooler", "postfix"]);
    assert!(!f.log().contains(&"dump-begin".to_string()));
    f.assert_all_running();
}

#[test]
fn sigterm_during_the_backup_starts_every_stopped_service_again() {
    let f = Fixture::new();
    fs::write(f.state.join("dump-pause"), "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", f.config.to_str().unwrap(), "upgrade", "prepare"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, err) = common::drain_output(&mut child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f.state.join("dump-started").exists() {
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let stderr = err.map(|h| h.join().unwrap()).unwrap_or_default();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("started again"), "{stderr}");
    assert_eq!(f.lines_with("start "), names(START_ORDER));
    f.assert_all_running();
}

#[test]
fn keep_running_takes_a_hot_backup_marked_so() {
    let f = Fixture::new();
    let (code, report, stderr) = f.kcbackup(&["upgrade", "prepare", "--keep-running", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(f.lines_with("stop ").is_empty());
    f.assert_all_running();
    assert_eq!(report["hot"], true);
    let set = report["set"].as_str().unwrap();
    let manifest = Manifest::load(&f.repo.join("sets").join(set)).unwrap();
    assert_eq!(manifest.upgrade.map(|u| u.services_stopped), Some(false));
    // No set yet: the free space was estimated from the live sizes.
    assert_eq!(
        report["space"]["estimated_from"],
        "the database and attachment sizes"
    );

    // A newer set of the APT hook has no census: finish passes it over.
    let (code, _, stderr) = f.kcbackup(&["backup", "--tag", "pre-upgrade", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    // Nothing changed: finish finds every service running and exits 0.
    let (code, finish, stderr) = f.kcbackup(&["upgrade", "finish", "--json"]);
    assert_eq!(code, 0, "{stderr}\n{finish}");
    assert_eq!(finish["changes"], serde_json::json!([]));
    assert_eq!(finish["set"].as_str(), Some(set));
    f.assert_all_running();

    // The next preparation estimates from the newest set.
    let (code, again, stderr) = f.kcbackup(&["upgrade", "prepare", "--keep-running", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let from = again["space"]["estimated_from"].as_str().unwrap();
    assert!(from.starts_with("set "), "{from}");
}

/// Every table's checksum: row for row, the database's content.
fn checksums(db: &str) -> BTreeMap<String, String> {
    let tables: Vec<String> = common::query(&format!("SHOW TABLES FROM `{db}`"))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    tables
        .iter()
        .map(|t| {
            let rows = common::query(&format!("CHECKSUM TABLE `{db}`.`{t}` EXTENDED"));
            (t.clone(), rows[0][1].clone())
        })
        .collect()
}

/// Every file below `root` with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::verify::list_files(root)
        .into_iter()
        .map(|rel| {
            let bytes = fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

#[test]
fn rollback_puts_database_attachments_and_config_back_and_keeps_what_the_upgrade_left() {
    let f = Fixture::new();
    let (code, report, stderr) = f.kcbackup(&["upgrade", "prepare", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let set = report["set"].as_str().unwrap().to_string();
    let db = f.store.database.clone();
    let (sums, attachments, config) = (
        checksums(&db),
        tree(&f.store.attachment_path),
        tree(&f.store.config_dir),
    );

    // A failed upgrade: the schema moved on, users went, the config changed,
    // a stray attachment appeared and one data file was damaged; the
    // server was started again.
    common::query(&format!(
        "INSERT INTO `{db}`.versions VALUES (99,0,0,0,1,'2030-01-01 00:00:00')"
    ));
    common::query(&format!(
        "DELETE FROM `{db}`.users WHERE objectclass = 65541"
    ));
    let cfg = f.store.config_dir.join("server.cfg");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str("\nnew_upgrade_option = 1\n");
    fs::write(&cfg, &text).unwrap();
    let stray = f.store.attachment_path.join("stray-after-upgrade");
    fs::write(&stray, "left by the upgrade").unwrap();
    let (victim, _) = attachments.iter().next().unwrap();
    fs::write(f.store.attachment_path.join(victim), "damaged").unwrap();
    assert!(f.service("kopano-server", "start").success());
    assert_ne!(checksums(&db), sums);

    let (code, _, stderr) = f.kcbackup(&["upgrade", "rollback"]);
    assert_eq!(code, 2, "refused without --yes: {stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(f.running("kopano-server"), "a refusal stops nothing");

    f.clear_log();
    let (code, rb, stderr) = f.kcbackup(&["upgrade", "rollback", "--yes", "--json"]);
    assert_eq!(code, 0, "{stderr}\n{rb}");
    assert_eq!(rb["set"].as_str(), Some(set.as_str()));
    assert_eq!(f.lines_with("stop "), ["kopano-server", WEB_SERVER]);
    let mut started = names(START_ORDER);
    started.push(WEB_SERVER.into());
    assert_eq!(f.lines_with("start "), started);
    f.assert_all_running();

    assert_eq!(checksums(&db), sums, "the database row for row");
    assert_eq!(tree(&f.store.attachment_path), attachments);
    assert_eq!(tree(&f.store.config_dir), config);
    // What the upgrade left is kept aside, not lost.
    let kept = PathBuf::from(rb["config_kept"].as_str().unwrap());
    assert_eq!(fs::read_to_string(kept.join("server.cfg")).unwrap(), text);
    let quarantine = PathBuf::from(
        rb["restore"]["attachments"]["quarantine"]
            .as_str()
            .unwrap_or_else(|| panic!("no quarantine: {rb}")),
    );
    assert!(
        tree(&quarantine)
            .values()
            .any(|b| b == b"left by the upgrade")
    );
    assert_eq!(
        rb["downgrade_to"].as_str(),
        Some(f.store.expected.kopano_version.to_string().as_str())
    );
}

#[test]
fn a_failed_preflight_stops_nothing() {
    let f = Fixture::new();
    let text = fs::read_to_string(&f.config).unwrap();
    let dump = f.state.parent().unwrap().join("dump").display().to_string();
    fs::write(&f.config, text.replace(&dump, "/nonexistent/mariadb-dump")).unwrap();
    let (code, _, stderr) = f.kcbackup(&["upgrade", "prepare"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing was stopped"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line why: {stderr}");
    assert!(f.log().is_empty(), "{:?}", f.log());
    f.assert_all_running();
}

#[test]
fn the_real_postfix_is_stopped_before_the_dump_and_started_again_by_finish() {
    if !Path::new("/etc/init.d/postfix").exists() {
        eprintln!("SKIPPED: postfix is not installed (scripts/install-deps --tests)");
        return;
    }
    let f = Fixture::build(&["postfix"]);
    let postfix = |action: &str| {
        Command::new("/etc/init.d/postfix")
            .arg(action)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(postfix("status"), Some(0), "the fixture started postfix");
    let (code, report, stderr) = f.kcbackup(&["upgrade", "prepare", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["stopped"], serde_json::json!(STOP_ORDER));
    assert_eq!(
        postfix("status"),
        Some(3),
        "postfix stays down for the upgrade"
    );
    let log = f.log();
    let begin = log.iter().position(|l| l == "dump-begin").expect("no dump");
    assert_eq!(
        log.first().map(String::as_str),
        Some("stop postfix"),
        "{log:?}"
    );
    assert!(begin > 0, "{log:?}");
    assert!(
        !log.iter().any(|l| l.starts_with("running-at-dump")),
        "{log:?}"
    );

    f.clear_log();
    let (code, finish, stderr) = f.kcbackup(&["upgrade", "finish", "--json"]);
    assert_eq!(code, 0, "{stderr}\n{finish}");
    let mut started = names(START_ORDER);
    started.push(WEB_SERVER.into());
    assert_eq!(f.lines_with("start "), started);
    assert_eq!(
        postfix("status"),
        Some(0),
        "finish started the real postfix"
    );
}
