//! Black-box tests of the backup's preflight and of the messages and exit
//! codes of bad input: what cannot work is refused before the dump starts
//! (no dump process, no set, no work directory), in one line, with its
//! documented exit code. The dump command is the real mariadb-dump behind a
//! small wrapper that records that it was started.

mod common;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcbackup::layout::Layout;
use support::{Env, Run, env, text};

/// `kcbackup.toml` for `env` with extra TOML appended and `[kopano]` lines
/// added; writes a dump wrapper that touches `<dir>/dump-started` and then
/// runs the real mariadb-dump, followed by `after` (shell).
struct Setup {
    config: PathBuf,
    marker: PathBuf,
}

fn setup(env: &Env, kopano: &str, extra: &str, after: &str) -> Setup {
    let dir = env.config.parent().unwrap();
    let marker = dir.join("dump-started");
    let wrapper = dir.join("dump-wrapper");
    let real = which("mariadb-dump");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch '{}'\n'{}' \"$@\" || exit $?\n{after}\n",
            marker.display(),
            real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let base = env
        .store
        .tool_config(&env.repo, "none")
        .replace("[kopano]\n", &format!("[kopano]\n{kopano}\n"));
    let text = format!(
        "{base}\n[mysql]\ndump_command = {}\n{extra}\n",
        toml_str(&wrapper.display().to_string())
    );
    let config = dir.join("preflight.toml");
    fs::write(&config, text).unwrap();
    Setup { config, marker }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

fn run(config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = common::kcbackup(&all);
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit `code`, one `kcbackup:` line containing every `words`, no dump
/// started, no set and no work directory in the repository.
fn assert_refused_before_the_dump(s: &Setup, env: &Env, run: &Run, code: i32, words: &[&str]) {
    assert_eq!(run.code, code, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    assert!(lines[0].starts_with("kcbackup: "), "{}", run.stderr);
    for w in words {
        assert!(lines[0].contains(w), "{w:?} not in: {}", run.stderr);
    }
    assert!(!s.marker.exists(), "the dump was started: {}", run.stderr);
    let sets = env.repo.join("sets");
    let left: Vec<_> = fs::read_dir(&sets)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the repository: {left:?}");
}

#[test]
fn s3_without_its_settings_is_refused_before_the_dump_starts() {
    let env = env(Layout::Database);
    let db = &env.store.database;
    // The live database says s3 (server.cfg says auto).
    common::query(&format!(
        "UPDATE `{db}`.settings SET value = 's3' WHERE name = 'attachment_storage'"
    ));
    let s = setup(&env, "", "", "");
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(
        &s,
        &env,
        &r,
        2,
        &["S3 endpoint is empty", "attachment_s3_hostname"],
    );

    // An older Kopano without the row, server.cfg (here: the TOML) says s3.
    common::query(&format!(
        "DELETE FROM `{db}`.settings WHERE name = 'attachment_storage'"
    ));
    let s = setup(&env, "attachment_storage = \"s3\"", "", "");
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(
        &s,
        &env,
        &r,
        2,
        &["S3 endpoint is empty", "attachment_s3_hostname"],
    );
}

#[test]
fn a_database_store_needs_no_attachment_directory() {
    let env = env(Layout::Database);
    fs::remove_dir_all(&env.store.attachment_path).unwrap();
    for method in ["none", "auto"] {
        let s = setup(&env, "", "", "");
        let r = run(&s.config, &["backup", "--json", "--snapshot", method]);
        assert_eq!(r.code, 0, "--snapshot {method}: {}", r.stderr);
        assert_eq!(text(&r.json, "status"), "complete", "{method}");
        assert!(s.marker.exists());
        let verify = env.verify(text(&r.json, "set"));
        assert_eq!(verify.code, 0, "{}", verify.stderr);
    }
}

#[test]
fn a_files_store_without_its_attachment_directory_is_refused_before_the_dump() {
    let env = env(Layout::FilesV2);
    let path = &env.store.attachment_path;
    fs::rename(path, path.with_extension("moved")).unwrap();
    let s = setup(&env, "", "", "");
    for method in ["none", "auto"] {
        let r = run(&s.config, &["backup", "--snapshot", method]);
        let shown = path.display().to_string();
        assert_refused_before_the_dump(&s, &env, &r, 2, &[&shown, "does not exist", "files_v2"]);
    }
}

#[test]
fn database_and_dump_program_problems_are_refused_before_the_dump() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let dir = env.config.parent().unwrap();
    let wrong = dir.join("wrong-password");
    fs::write(&wrong, "not the password\n").unwrap();

    // Wrong credentials: the configuration must change (2).
    let extra = format!("password_file = {}", toml_str(&wrong.display().to_string()));
    let s = setup(&env, "", &extra, "");
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(&s, &env, &r, 2, &["Access denied", &env.store.db_user]);

    // An unknown database: 2 as well.
    let s = setup(&env, "", "database = \"no_such_kopano\"", "");
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(&s, &env, &r, 2, &["no_such_kopano"]);

    // No server behind the socket: may answer next time (1).
    let socket = dir.join("no-server.sock");
    let extra = format!("socket = {}", toml_str(&socket.display().to_string()));
    let s = setup(&env, "", &extra, "");
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(&s, &env, &r, 1, &["did not answer"]);

    // A dump command that is not there (2).
    let s = setup(&env, "", "", "");
    let text = fs::read_to_string(&s.config).unwrap();
    let missing = dir.join("no-such-dump");
    let text = text.replace(
        &dir.join("dump-wrapper").display().to_string(),
        &missing.display().to_string(),
    );
    fs::write(&s.config, text).unwrap();
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(&s, &env, &r, 2, &[&missing.display().to_string()]);

    // Both at once: every problem is told, one line each; the dump program
    // is the configuration's to fix, so 2.
    let socket_line = format!("socket = {}", toml_str(&socket.display().to_string()));
    let text = fs::read_to_string(&s.config).unwrap() + &socket_line + "\n";
    fs::write(&s.config, text).unwrap();
    let r = run(&s.config, &["backup"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stderr);
    assert!(
        lines[0].contains("2 problems, nothing was dumped"),
        "{}",
        r.stderr
    );
    assert!(
        lines[1].contains(&missing.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(lines[2].contains("did not answer"), "{}", r.stderr);
    assert!(!s.marker.exists());
}

#[test]
fn a_config_file_that_is_not_utf8_is_a_config_error() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let s = setup(&env, "", "", "");
    let mut bytes = fs::read(&s.config).unwrap();
    bytes.extend_from_slice(b"# caf\xe9\n");
    fs::write(&s.config, bytes).unwrap();
    let r = run(&s.config, &["backup"]);
    assert_refused_before_the_dump(&s, &env, &r, 2, &["not valid UTF-8", "preflight.toml"]);
}

#[test]
fn server_cfg_is_read_as_bytes_like_kopano_but_values_passed_on_must_be_utf8() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let cfg = &env.store.server_cfg;
    let original = fs::read(cfg).unwrap();
    // Latin-1 in a comment and in a setting kcbackup does not use, also
    // in an included file: Kopano reads them as bytes, and so do we.
    let include = cfg.with_file_name("latin1.cfg");
    fs::write(&include, b"# r\xe9glages\nserver_name = caf\xe9\n").unwrap();
    let mut with = original.clone();
    with.extend_from_slice(b"\n# \xe9t\xe9\n!include latin1.cfg\n");
    fs::write(cfg, &with).unwrap();
    let s = setup(&env, "", "", "");
    let r = run(&s.config, &["backup", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A database user that is not UTF-8 cannot be handed to the client.
    fs::write(&include, b"mysql_user = k\xf6pano\n").unwrap();
    let r = run(&s.config, &["backup"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("mysql_user") && r.stderr.contains("UTF-8"),
        "{}",
        r.stderr
    );
    fs::write(cfg, original).unwrap();
}

#[test]
fn an_unknown_or_malformed_set_id_is_a_usage_error_naming_the_nearest_sets() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let first = text(&env.backup(&[]).json, "set").to_string();
    let second = text(&env.backup(&[]).json, "set").to_string();
    // Between the two (the ids are times), before both, and malformed.
    // (`-1` sorts after `first` and before `second`, also when `second` is
    // `first-2`, both taken in one second.)
    let between = format!("{first}-1");
    for (spec, named) in [
        (between.as_str(), vec![first.as_str(), second.as_str()]),
        ("20000101T000000Z", vec![first.as_str()]),
        ("yesterday", vec![second.as_str()]),
    ] {
        for cmd in [
            vec!["verify", spec],
            vec!["drill", spec],
            vec!["restore", spec, "--to-config", "/nonexistent/x"],
        ] {
            let r = env.run_any(&cmd);
            assert_eq!(r.code, 2, "{cmd:?}: {}", r.stderr);
            assert_eq!(r.stderr.lines().count(), 1, "{cmd:?}: {}", r.stderr);
            for id in &named {
                assert!(
                    r.stderr.contains(id),
                    "{cmd:?}: {id} not named: {}",
                    r.stderr
                );
            }
            assert!(r.stderr.contains("`latest`"), "{cmd:?}: {}", r.stderr);
        }
    }
}

#[test]
fn a_dump_stopped_by_sigterm_says_so_in_one_clean_sentence() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    // The real dump runs to its end, then the "dump" hangs on.
    let s = setup(&env, "", "", "sleep 60");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", s.config.to_str().unwrap(), "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.marker.exists() {
        assert!(Instant::now() < deadline, "the dump never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("kcbackup: "), "{stderr}");
    assert!(
        !last.contains(": :") && !last.ends_with(':'),
        "empty field: {last}"
    );
    assert_eq!(
        last.matches("signal 15").count() + last.matches("SIGTERM").count(),
        1,
        "{last}"
    );
    assert!(last.contains("no set was published"), "{last}");
}

/// A tmpfs mounted at a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }

    fn remount_read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_repository_is_refused_before_the_dump() {
    let env = env(Layout::FilesV1 { l1: 10, l2: 20 });
    let mount = Tmpfs::mount(&env.repo);
    let s = setup(&env, "", "", "");
    let first = run(&s.config, &["backup", "--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let set = text(&first.json, "set").to_string();
    fs::remove_file(&s.marker).unwrap();

    // The backup disk is write-protected now.
    mount.remount_read_only();
    let r = run(&s.config, &["backup"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("not writable"), "{}", r.stderr);
    assert!(!s.marker.exists(), "the dump was started: {}", r.stderr);
    let names: Vec<_> = fs::read_dir(env.repo.join("sets"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![set]);
}
