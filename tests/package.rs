//! The Debian package: `make deb`'s script builds it from the release build,
//! then it is installed with dpkg, checked (files, modes, conffile, units,
//! man pages), run, and purged, leaving nothing behind. Root only: it
//! installs into the real system, so it skips when kcbackup is installed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kcbackup::settings::tool;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONFFILE: &str = "/etc/kcbackup/kcbackup.toml";
const APT_LINK: &str = "/etc/apt/apt.conf.d/90kcbackup-pre-upgrade";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn mode(path: &str) -> u32 {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(meta.uid(), 0, "{path} not owned by root");
    meta.permissions().mode() & 0o7777
}

/// Why this machine cannot run the install test, if it cannot.
fn cannot_install() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("dpkg -i needs root".into());
    }
    for tool in ["dpkg", "cargo-deb", "man"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!(
                "{tool} is missing (scripts/install-deps installs it)"
            ));
        }
    }
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "kcbackup"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"));
    if installed || Path::new("/usr/sbin/kcbackup").exists() || Path::new("/etc/kcbackup").exists()
    {
        return Some("kcbackup is installed on this machine; not touching it".into());
    }
    None
}

#[test]
fn deb_installs_runs_and_purges_cleanly() {
    if let Some(why) = cannot_install() {
        println!("SKIPPED deb_installs_runs_and_purges_cleanly: {why}");
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    run(&mut Command::new(Path::new(ROOT).join("scripts/make-deb")));
    let deb = PathBuf::from(ROOT).join(format!("target/debian/kcbackup_{version}_amd64.deb"));
    assert!(deb.is_file(), "{} was not built", deb.display());
    let control = stdout(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Depends"),
    );
    assert!(
        control.contains("mariadb-client | default-mysql-client"),
        "{control}"
    );

    // Docker images often exclude man pages and docs from dpkg: include ours.
    run(Command::new("dpkg")
        .args(["-i", "--path-include=/usr/share/man/*"])
        .arg("--path-include=/usr/share/doc/kcbackup/*")
        .arg(&deb));
    let files = stdout(Command::new("dpkg").args(["-L", "kcbackup"]));
    let result = std::panic::catch_unwind(|| check_installed(version));
    // An enabled APT hook must not outlive the package (it would break APT).
    std::os::unix::fs::symlink("/usr/share/kcbackup/apt/90kcbackup-pre-upgrade", APT_LINK)
        .expect("enabling the APT hook");
    run(Command::new("dpkg").args(["--purge", "kcbackup"]));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }

    assert!(
        fs::symlink_metadata(APT_LINK).is_err(),
        "{APT_LINK} left behind"
    );
    let left: Vec<&str> = files
        .lines()
        .filter(|p| Path::new(p).exists() && !Path::new(p).is_dir())
        .collect();
    assert!(left.is_empty(), "left behind by dpkg --purge: {left:?}");
    for dir in [
        "/etc/kcbackup",
        "/usr/share/kcbackup",
        "/usr/share/doc/kcbackup",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left behind");
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "kcbackup"])
        .output()
        .expect("dpkg-query");
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "still known to dpkg"
    );
}

fn check_installed(version: &str) {
    assert_eq!(mode("/usr/sbin/kcbackup"), 0o755);
    assert_eq!(mode(CONFFILE), 0o600);
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "kcbackup"]));
    assert!(conffiles.contains(CONFFILE), "not a conffile: {conffiles}");
    let text = fs::read_to_string(CONFFILE).unwrap();
    assert_eq!(
        tool::parse_str(&text, Path::new(CONFFILE)).unwrap(),
        tool::ToolConfig::default(),
        "the installed config must mean the defaults"
    );
    for file in [
        "/lib/systemd/system/kcbackup-backup.service",
        "/lib/systemd/system/kcbackup-backup.timer",
        "/lib/systemd/system/kcbackup-drill.service",
        "/lib/systemd/system/kcbackup-drill.timer",
        "/usr/share/bash-completion/completions/kcbackup",
        "/usr/share/zsh/vendor-completions/_kcbackup",
        "/usr/share/fish/vendor_completions.d/kcbackup.fish",
        "/usr/share/man/man8/kcbackup-backup.8.gz",
        "/usr/share/doc/kcbackup/README.md",
        "/usr/share/doc/kcbackup/README.Debian",
        "/usr/share/doc/kcbackup/kcbackup.rules.yml",
        "/usr/share/kcbackup/apt/90kcbackup-pre-upgrade",
    ] {
        assert_eq!(mode(file), 0o644, "{file}");
    }
    assert_eq!(mode("/usr/share/kcbackup/kcbackup-pre-upgrade"), 0o755);
    // Off until enabled: APT does not read the snippet where it is installed.
    assert!(
        fs::symlink_metadata(APT_LINK).is_err(),
        "APT hook enabled on install"
    );

    let v = stdout(Command::new("/usr/sbin/kcbackup").arg("--version"));
    assert_eq!(v.trim(), format!("kcbackup {version}"));
    let page = stdout(Command::new("man").args(["-w", "kcbackup"]));
    assert_eq!(page.trim(), "/usr/share/man/man8/kcbackup.8.gz");
    let page = stdout(Command::new("man").args(["-w", "8", "kcbackup-drill"]));
    assert!(page.contains("kcbackup-drill.8"), "{page}");

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let units = [
            "kcbackup-backup.service",
            "kcbackup-backup.timer",
            "kcbackup-drill.service",
            "kcbackup-drill.timer",
        ]
        .map(|u| format!("/lib/systemd/system/{u}"));
        let out = run(Command::new("systemd-analyze").arg("verify").args(&units));
        let noise = String::from_utf8_lossy(&out.stderr);
        assert!(
            !noise.contains("kcbackup"),
            "systemd-analyze verify complains:\n{noise}"
        );
    } else {
        println!("SKIPPED systemd-analyze verify: systemd-analyze is missing");
    }

    let demo = run(Command::new("/usr/sbin/kcbackup").arg("demo"));
    let said = String::from_utf8_lossy(&demo.stdout);
    assert!(said.contains("complete"), "demo said:\n{said}");
}

/// Every key the shipped config shows commented out is a real key: with
/// all of them uncommented it still parses (unknown keys are errors).
#[test]
fn shipped_config_lists_real_keys_only() {
    let text = fs::read_to_string(Path::new(ROOT).join("packaging/kcbackup.toml")).unwrap();
    let path = Path::new(CONFFILE);
    assert_eq!(
        tool::parse_str(&text, path).unwrap(),
        tool::ToolConfig::default()
    );
    let mut keys = 0;
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) => {
                keys += 1;
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(keys >= 14, "only {keys} commented keys");
    let all = tool::parse_str(&uncommented, path).unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(all, tool::ToolConfig::default());
}

fn is_key_line(text: &str) -> bool {
    let Some((key, _)) = text.split_once(" = ") else {
        return false;
    };
    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The shipped alert rules load, and fire as their unit tests expect.
#[test]
fn alert_rules_pass_promtool() {
    let dir = Path::new(ROOT).join("packaging");
    for args in [
        ["check", "rules", "kcbackup.rules.yml"],
        ["test", "rules", "kcbackup.rules.test.yml"],
    ] {
        run(Command::new("promtool").args(args).current_dir(&dir));
    }
}
