//! `[hooks]`: the administrator's commands around an operation. Each is an
//! argv list (no shell unless argv[0] is one), run with a time limit and the
//! operation's context in `KCBACKUP_*` variables; its output goes to the log.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::settings::tool::HookSpec;
use crate::signals;

/// The time limit of a hook that sets none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Output kept for the log and for an error message.
const MAX_OUTPUT: usize = 64 * 1024;
/// Variables the hook never inherits: the MySQL client's password variable,
/// and any `KCBACKUP_*` of our own caller (the context is set afresh) except
/// the settings a hook that runs kcbackup itself should share.
const SCRUBBED: &[&str] = &["MYSQL_PWD"];
const KEPT: &[&str] = &["KCBACKUP_CONFIG", "KCBACKUP_LOG"];

/// The context a hook is told in its environment.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub operation: String,
    pub set: Option<String>,
    /// `complete`, `incomplete`, or `failed`; unset before the run.
    pub status: Option<String>,
    pub exit_code: Option<i32>,
    pub repository: String,
    pub error: Option<String>,
}

impl Context {
    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("KCBACKUP_OPERATION", self.operation.clone()),
            ("KCBACKUP_REPOSITORY", self.repository.clone()),
        ];
        let optional = [
            ("KCBACKUP_SET", self.set.clone()),
            ("KCBACKUP_STATUS", self.status.clone()),
            ("KCBACKUP_EXIT_CODE", self.exit_code.map(|c| c.to_string())),
            ("KCBACKUP_ERROR", self.error.clone()),
        ];
        vars.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        vars
    }
}

/// How a hook ended.
#[derive(Debug)]
pub struct HookRun {
    pub ok: bool,
    /// `exit status 3`, `killed after the 5 s time limit`, ...
    pub how: String,
    pub output: String,
}

/// Runs hook `name`, logs its output line by line on stderr, and fails
/// (naming the hook, how it ended and its output) unless it exited 0.
/// `interruptible`: a signal to kcbackup terminates the hook too (before_*);
/// not so for after_* and on_failure, which are meant to run after one.
pub fn run(
    name: &str,
    spec: &HookSpec,
    default_timeout: Option<u64>,
    ctx: &Context,
    interruptible: bool,
) -> Result<()> {
    let limit = spec
        .timeout_seconds()
        .or(default_timeout)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let ran = execute(spec.argv(), Duration::from_secs(limit), ctx, interruptible);
    let ran = match ran {
        Ok(r) => r,
        Err(e) => bail!("hook {name} ({}) could not start: {e:#}", show(spec.argv())),
    };
    for line in ran.output.lines() {
        eprintln!("kcbackup: hook {name}: {line}");
    }
    if !ran.ok {
        let output = ran.output.trim_end();
        let said = if output.is_empty() {
            "no output".to_owned()
        } else {
            format!("its output:\n{output}")
        };
        bail!(
            "hook {name} ({}) failed: {}; {said}",
            show(spec.argv()),
            ran.how
        );
    }
    Ok(())
}

/// The command as the message names it: long inline scripts are cut.
fn show(argv: &[String]) -> String {
    const MAX: usize = 100;
    let all = argv.join(" ");
    match all.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &all[..end]),
        None => all,
    }
}

fn execute(
    argv: &[String],
    limit: Duration,
    ctx: &Context,
    interruptible: bool,
) -> Result<HookRun> {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        bail!("the command is empty");
    };
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        let scrub = key.to_str().is_some_and(|k| {
            (k.starts_with("KCBACKUP_") && !KEPT.contains(&k)) || SCRUBBED.contains(&k)
        });
        if scrub {
            cmd.env_remove(key);
        }
    }
    cmd.envs(ctx.vars());
    let mut child = cmd.spawn()?;
    // Our copies of the pipe's write end are gone with `cmd`.
    drop(cmd);
    let pgid = child.id();
    let _guard = interruptible.then(|| signals::terminate_group_on_signal(pgid));

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        let mut reader = reader;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        let _ = tx.send(kept);
    });

    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            signals::kill_group(pgid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever the hook left running in its group goes too: it would hold
    // the output pipe open.
    signals::kill_group(pgid);
    let output = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let output = String::from_utf8_lossy(&output).into_owned();
    Ok(match status {
        Some(s) if s.success() => HookRun {
            ok: true,
            how: "exit status 0".into(),
            output,
        },
        Some(s) => HookRun {
            ok: false,
            how: s.to_string(),
            output,
        },
        None => HookRun {
            ok: false,
            how: format!("killed after its {} s time limit", limit.as_secs()),
            output,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> HookSpec {
        HookSpec::Argv(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    fn ctx() -> Context {
        Context {
            operation: "backup".into(),
            repository: "/repo".into(),
            set: Some("s1".into()),
            ..Context::default()
        }
    }

    #[test]
    fn context_is_in_the_environment_and_unset_keys_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let spec = sh(&format!("env > {}", out.display()));
        run("before_backup", &spec, None, &ctx(), true).unwrap();
        let env = std::fs::read_to_string(out).unwrap();
        assert!(env.contains("KCBACKUP_OPERATION=backup\n"), "{env}");
        assert!(env.contains("KCBACKUP_SET=s1\n"), "{env}");
        assert!(env.contains("KCBACKUP_REPOSITORY=/repo\n"), "{env}");
        assert!(!env.contains("KCBACKUP_STATUS"), "{env}");
    }

    #[test]
    fn failure_names_the_hook_and_its_output() {
        let err = run(
            "before_backup",
            &sh("echo nope; exit 4"),
            None,
            &ctx(),
            true,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("hook before_backup"), "{msg}");
        assert!(msg.contains("exit status: 4"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn a_hook_over_its_time_limit_is_killed_with_its_children() {
        let spec = HookSpec::Table(crate::settings::tool::HookTable {
            command: vec!["/bin/sh".into(), "-c".into(), "sleep 30 & sleep 30".into()],
            timeout_seconds: Some(1),
        });
        let started = Instant::now();
        let err = run("after_backup", &spec, Some(100), &ctx(), true).unwrap_err();
        assert!(format!("{err:#}").contains("1 s time limit"), "{err:#}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_missing_program_is_named() {
        let spec = HookSpec::Argv(vec!["/nonexistent/hook".into()]);
        let msg = format!(
            "{:#}",
            run("on_failure", &spec, None, &ctx(), false).unwrap_err()
        );
        assert!(
            msg.contains("/nonexistent/hook") && msg.contains("could not start"),
            "{msg}"
        );
    }
}
