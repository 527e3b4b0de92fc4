//! The services around an upgrade (`[upgrade]`): their status, stop and
//! start through systemd, SysV init scripts or a site's own command, with
//! LSB status codes (0 running, 3 stopped, 4 not installed). No shell.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::settings::tool::UpgradeSection;

pub const DEFAULT_STOP_TIMEOUT_S: u64 = 60;

/// `[upgrade] service_manager` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManagerKind {
    Auto,
    Systemd,
    Sysv,
    Command,
}

/// How services are reached, resolved from `service_manager` and `command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// systemd when PID 1 is systemd, else SysV; decided when used.
    Auto,
    Systemd,
    Sysv,
    /// An argv template with `{service}` and `{action}`.
    Command(Vec<String>),
}

/// The validated `[upgrade]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeSettings {
    pub mta: Vec<String>,
    pub services: Vec<String>,
    pub optional_services: Vec<String>,
    pub web_servers: Vec<String>,
    pub manager: Manager,
    pub stop_timeout: Duration,
    /// The new packages' example configs, compared by `upgrade finish`.
    pub example_config_dir: PathBuf,
}

pub const DEFAULT_EXAMPLE_CONFIG_DIR: &str = "/usr/share/doc/kopano/example-config";

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

impl Default for UpgradeSettings {
    fn default() -> Self {
        UpgradeSettings {
            mta: strings(&["postfix"]),
            services: strings(&["kopano-spooler", "kopano-server"]),
            optional_services: strings(&[
                "kopano-dagent",
                "kopano-gateway",
                "kopano-ical",
                "kopano-search",
                "kopano-monitor",
            ]),
            web_servers: strings(&["apache2", "httpd"]),
            manager: Manager::Auto,
            stop_timeout: Duration::from_secs(DEFAULT_STOP_TIMEOUT_S),
            example_config_dir: PathBuf::from(DEFAULT_EXAMPLE_CONFIG_DIR),
        }
    }
}

impl UpgradeSettings {
    /// Each missing key at its default; a `command` manager needs a
    /// template that names `{service}` and `{action}`.
    pub fn from_section(s: &UpgradeSection) -> Result<UpgradeSettings, String> {
        let d = UpgradeSettings::default();
        let manager = match s.service_manager.unwrap_or(ManagerKind::Auto) {
            ManagerKind::Auto => Manager::Auto,
            ManagerKind::Systemd => Manager::Systemd,
            ManagerKind::Sysv => Manager::Sysv,
            ManagerKind::Command => {
                let argv = s.command.clone().unwrap_or_default();
                let names_both = argv.iter().any(|a| a.contains("{service}"))
                    && argv.iter().any(|a| a.contains("{action}"));
                if argv.is_empty() || !names_both {
                    return Err("[upgrade] service_manager = \"command\" needs command = \
                         [\"PROGRAM\", ...] naming {service} and {action}"
                        .into());
                }
                Manager::Command(argv)
            }
        };
        let stop_timeout_s = s.stop_timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S);
        if stop_timeout_s == 0 {
            return Err("[upgrade] stop_timeout_s must be at least 1".into());
        }
        let all = [&s.mta, &s.services, &s.optional_services, &s.web_servers];
        if let Some(bad) = all
            .iter()
            .filter_map(|l| l.as_ref())
            .flatten()
            .find(|n| !valid_name(n))
        {
            return Err(format!("[upgrade] {bad:?} is not a service name"));
        }
        Ok(UpgradeSettings {
            mta: s.mta.clone().unwrap_or(d.mta),
            services: s.services.clone().unwrap_or(d.services),
            optional_services: s.optional_services.clone().unwrap_or(d.optional_services),
            web_servers: s.web_servers.clone().unwrap_or(d.web_servers),
            manager,
            stop_timeout: Duration::from_secs(stop_timeout_s),
            example_config_dir: s.example_config_dir.clone().unwrap_or(d.example_config_dir),
        })
    }
}

/// A name that is safe as a unit name and a path component.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// What a status query said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Stopped,
    NotInstalled,
}

/// What a stop or start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and was stopped (or was stopped and is now running).
    Changed,
    /// It already was in the wanted state.
    Already,
    /// Not installed here: skipped.
    NotInstalled,
}

/// Runs status, stop and start; `stop` returns only once the service is down.
#[derive(Debug, Clone)]
pub struct ServiceManager {
    backend: Backend,
    stop_timeout: Duration,
    poll: Duration,
}

#[derive(Debug, Clone)]
enum Backend {
    Systemd,
    /// `service` when on PATH, else the init script itself.
    Sysv {
        service: Option<PathBuf>,
        init_d: PathBuf,
    },
    Command(Vec<String>),
}

/// How long one status/start/stop command may take before it is killed.
const COMMAND_TIMEOUT_FLOOR: Duration = Duration::from_secs(30);

impl ServiceManager {
    pub fn new(settings: &UpgradeSettings) -> ServiceManager {
        let manager = match &settings.manager {
            Manager::Auto if Path::new("/run/systemd/system").is_dir() => Manager::Systemd,
            Manager::Auto => Manager::Sysv,
            m => m.clone(),
        };
        let backend = match manager {
            Manager::Systemd => Backend::Systemd,
            Manager::Command(argv) => Backend::Command(argv),
            _ => Backend::Sysv {
                service: ["/usr/sbin/service", "/sbin/service", "/usr/bin/service"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file()),
                init_d: PathBuf::from("/etc/init.d"),
            },
        };
        ServiceManager {
            backend,
            stop_timeout: settings.stop_timeout,
            poll: Duration::from_millis(100),
        }
    }

    fn argv(&self, name: &str, action: &str) -> Option<Vec<String>> {
        match &self.backend {
            Backend::Systemd => {
                let mut v = strings(&["systemctl", action]);
                if action == "status" {
                    v.push("--no-pager".into());
                }
                v.push("--".into());
                v.push(name.into());
                Some(v)
            }
            Backend::Sysv { service, init_d } => {
                let script = init_d.join(name);
                if !script.is_file() {
                    return None;
                }
                Some(match service {
                    Some(s) => vec![s.display().to_string(), name.into(), action.into()],
                    None => vec![script.display().to_string(), action.into()],
                })
            }
            Backend::Command(template) => Some(
                template
                    .iter()
                    .map(|a| a.replace("{service}", name).replace("{action}", action))
                    .collect(),
            ),
        }
    }

    /// Runs one action; the exit code and stderr (for messages).
    fn run(&self, name: &str, action: &str) -> anyhow::Result<Option<(i32, String)>> {
        let Some(argv) = self.argv(name, action) else {
            return Ok(None);
        };
        let limit = self.stop_timeout.max(COMMAND_TIMEOUT_FLOOR);
        let handle = duct::cmd(&argv[0], &argv[1..])
            .stdin_null()
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .start()
            .with_context(|| format!("while running {}", argv.join(" ")))?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(out) = handle.try_wait()? {
                let code = out.status.code().unwrap_or(-1);
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Ok(Some((code, err)));
            }
            if Instant::now() >= deadline {
                let _ = handle.kill();
                bail!(
                    "{} did not finish within {}s",
                    argv.join(" "),
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// LSB: 0 running, 1-3 not running, 4 unknown (not installed).
    pub fn status(&self, name: &str) -> anyhow::Result<State> {
        match self.run(name, "status")? {
            None => Ok(State::NotInstalled),
            Some((0, _)) => Ok(State::Running),
            Some((1..=3, _)) => Ok(State::Stopped),
            Some((4, _)) => Ok(State::NotInstalled),
            Some((code, err)) => {
                bail!("the status of {name} is unknown (status exit code {code}): {err}")
            }
        }
    }

    /// Stops `name` if it runs and waits until it is really down.
    pub fn stop(&self, name: &str) -> anyhow::Result<Outcome> {
        match self.status(name)? {
            State::NotInstalled => return Ok(Outcome::NotInstalled),
            State::Stopped => return Ok(Outcome::Already),
            State::Running => {}
        }
        if let Some((code, err)) = self.run(name, "stop")?
            && code != 0
        {
            bail!("stopping {name} failed (exit code {code}): {err}");
        }
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            if self.status(name)? != State::Running {
                return Ok(Outcome::Changed);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} is still running {}s after it was stopped ([upgrade] stop_timeout_s)",
                    self.stop_timeout.as_secs()
                );
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Starts `name` and checks that it runs.
    pub fn start(&self, name: &str) -> anyhow::Result<Outcome> {
        match self.status(name)? {
            State::NotInstalled => return Ok(Outcome::NotInstalled),
            State::Running => return Ok(Outcome::Already),
            State::Stopped => {}
        }
        if let Some((code, err)) = self.run(name, "start")?
            && code != 0
        {
            bail!("starting {name} failed (exit code {code}): {err}");
        }
        // A daemon may fork before it is up: give it the stop timeout too.
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            if self.status(name)? == State::Running {
                return Ok(Outcome::Changed);
            }
            if Instant::now() >= deadline {
                bail!("{name} was started but is not running");
            }
            std::thread::sleep(self.poll);
        }
    }
}

/// The manual's stop order: MTA, services as listed, then the optional ones.
pub fn stop_order(u: &UpgradeSettings) -> Vec<String> {
    u.mta
        .iter()
        .chain(&u.services)
        .chain(&u.optional_services)
        .cloned()
        .collect()
}

/// The manual's start order for the services in `stopped`: kopano-server
/// first, then the rest of `services` (listed in stop order, so reversed),
/// then the optional ones, then the MTA. Names not in the lists go before
/// the MTA.
pub fn start_order(u: &UpgradeSettings, stopped: &[String]) -> Vec<String> {
    let mut order: Vec<String> = u.services.iter().rev().cloned().collect();
    order.extend(u.optional_services.iter().cloned());
    order.extend(
        stopped
            .iter()
            .filter(|s| !u.mta.contains(s) && !order.contains(s))
            .cloned()
            .collect::<Vec<_>>(),
    );
    order.extend(u.mta.iter().cloned());
    order.retain(|s| stopped.contains(s));
    order.dedup();
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<UpgradeSettings, String> {
        let c = crate::settings::tool::parse_str(text, Path::new("/t.toml")).unwrap();
        UpgradeSettings::from_section(&c.upgrade)
    }

    fn section_err(text: &str) -> bool {
        crate::settings::tool::parse_str(text, Path::new("/t.toml")).is_err()
    }

    #[test]
    fn defaults_follow_the_manual() {
        let u = section("").unwrap();
        assert_eq!(u, UpgradeSettings::default());
        assert_eq!(
            stop_order(&u)[..3],
            strings(&["postfix", "kopano-spooler", "kopano-server"])
        );
        let all = stop_order(&u);
        let start = start_order(&u, &all);
        assert_eq!(start[..2], strings(&["kopano-server", "kopano-spooler"]));
        assert_eq!(start.last().map(String::as_str), Some("postfix"));
        assert_eq!(start.len(), all.len());
    }

    #[test]
    fn start_order_only_names_what_was_stopped() {
        let u = UpgradeSettings::default();
        let stopped = strings(&["postfix", "kopano-server", "kopano-search"]);
        assert_eq!(
            start_order(&u, &stopped),
            strings(&["kopano-server", "kopano-search", "postfix"])
        );
    }

    #[test]
    fn command_manager_needs_a_template_with_both_placeholders() {
        let err = section("[upgrade]\nservice_manager = \"command\"\n").unwrap_err();
        assert!(err.contains("{service}"), "{err}");
        let err = section(
            "[upgrade]\nservice_manager = \"command\"\ncommand = [\"/x\", \"{service}\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("{action}"), "{err}");
        let u = section(
            "[upgrade]\nservice_manager = \"command\"\ncommand = [\"/x\", \"{service}\", \"{action}\"]\n",
        )
        .unwrap();
        assert_eq!(
            u.manager,
            Manager::Command(strings(&["/x", "{service}", "{action}"]))
        );
        assert!(section_err("[upgrade]\nservice_manager = \"upstart\"\n"));
    }

    #[test]
    fn bad_names_and_zero_timeout_are_refused() {
        assert!(section("[upgrade]\nservices = [\"../x\"]\n").is_err());
        assert!(section("[upgrade]\nmta = [\"--now\"]\n").is_err());
        assert!(section("[upgrade]\nstop_timeout_s = 0\n").is_err());
    }

    /// A real process stands in for a daemon: the script's status reads its
    /// pid file, stop kills it, and an unknown name is "not installed".
    #[test]
    fn command_manager_stops_waits_and_starts_a_real_process() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("svc");
        std::fs::write(&script, TEST_SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("installed")).unwrap();
        std::fs::write(dir.path().join("installed/demo"), "").unwrap();
        let u = UpgradeSettings {
            manager: Manager::Command(vec![
                script.display().to_string(),
                dir.path().display().to_string(),
                "{service}".into(),
                "{action}".into(),
            ]),
            stop_timeout: Duration::from_secs(10),
            ..UpgradeSettings::default()
        };
        let m = ServiceManager::new(&u);
        assert_eq!(m.status("absent").unwrap(), State::NotInstalled);
        assert_eq!(m.stop("absent").unwrap(), Outcome::NotInstalled);
        assert_eq!(m.status("demo").unwrap(), State::Stopped);
        assert_eq!(m.start("demo").unwrap(), Outcome::Changed);
        assert_eq!(m.status("demo").unwrap(), State::Running);
        assert_eq!(m.start("demo").unwrap(), Outcome::Already);
        assert_eq!(m.stop("demo").unwrap(), Outcome::Changed);
        assert_eq!(m.status("demo").unwrap(), State::Stopped);
        assert_eq!(m.stop("demo").unwrap(), Outcome::Already);
    }

    /// Stop exits 0 but the process ignores it: stop must report it running.
    #[test]
    fn a_service_that_will_not_die_is_an_error_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("svc");
        std::fs::write(&script, TEST_SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("installed")).unwrap();
        std::fs::write(dir.path().join("installed/stubborn"), "").unwrap();
        std::fs::write(dir.path().join("stubborn.nostop"), "").unwrap();
        let mut u = UpgradeSettings {
            manager: Manager::Command(vec![
                script.display().to_string(),
                dir.path().display().to_string(),
                "{service}".into(),
                "{action}".into(),
            ]),
            ..UpgradeSettings::default()
        };
        u.stop_timeout = Duration::from_secs(1);
        let m = ServiceManager::new(&u);
        m.start("stubborn").unwrap();
        let err = m.stop("stubborn").unwrap_err().to_string();
        assert!(err.contains("still running"), "{err}");
        std::fs::remove_file(dir.path().join("stubborn.nostop")).unwrap();
        m.stop("stubborn").unwrap();
    }

    const TEST_SCRIPT: &str = r#"#!/bin/sh
# test service: $1 state dir, $2 name, $3 action
d=$1; n=$2; a=$3
[ -e "$d/installed/$n" ] || exit 4
pid=$(cat "$d/$n.pid" 2>/dev/null)
# a zombie (nobody reaped it yet) is not running
running() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ! grep -q ') Z' "/proc/$pid/stat"; }
case $a in
status) running && exit 0; exit 3 ;;
start) running && exit 0
  sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > "$d/$n.pid"; exit 0 ;;
stop) [ -e "$d/$n.nostop" ] && exit 0
  running && kill "$pid"; exit 0 ;;
esac
exit 2
"#;
}
