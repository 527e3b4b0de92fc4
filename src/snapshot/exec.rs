//! Runs the external tools a snapshot needs (lvm2, btrfs-progs, util-linux)
//! through duct: stdout returned, stderr captured into the error message, and
//! a missing tool named together with the Debian package that provides it.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::process::{CommandExt, ExitStatusExt};

use anyhow::{Result, anyhow, bail};

/// The Debian package that ships `program`, for the "install ..." advice.
fn package_of(program: &str) -> &'static str {
    match program {
        "lvcreate" | "lvremove" | "lvs" | "vgs" | "lvchange" => "lvm2",
        "btrfs" => "btrfs-progs",
        "mount" | "umount" => "mount",
        "findmnt" => "util-linux",
        _ => "the package that provides it",
    }
}

/// Runs `program args...` to completion and returns its stdout.
///
/// The child runs in its own process group: a Ctrl-C typed at the terminal
/// reaches only kcbackup, which lets a half-done `lvcreate` finish and then
/// removes its result, instead of the tool dying halfway.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let shown = || {
        let mut s = program.to_string();
        for a in &args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let output = duct::cmd(program, &args)
        .env("LC_ALL", "C")
        // lvm2 complains about every inherited descriptor (the dump's pipes).
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        })
        .run()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                let package = package_of(program);
                anyhow!("`{program}` was not found: install {package} (apt-get install {package})")
            } else {
                anyhow!("could not start `{}`: {e}", shown())
            }
        })?;
    if !output.status.success() {
        let how = match (output.status.code(), output.status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".into(),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = match stderr.trim() {
            "" => String::new(),
            text => format!(": {text}"),
        };
        bail!("`{}` failed ({how}){said}", shown());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let err = run("lvcreate-not-installed-here", ["x"]).unwrap_err();
        assert!(format!("{err}").contains("was not found"), "{err}");
        assert_eq!(package_of("lvs"), "lvm2");
        assert_eq!(package_of("btrfs"), "btrfs-progs");
    }

    #[test]
    fn failure_carries_stderr_and_status() {
        let err = run("sh", ["-c", "echo boom >&2; exit 5"]).unwrap_err();
        let msg = format!("{err}");
        assert!(
            msg.contains("exit status 5") && msg.contains("boom"),
            "{msg}"
        );
        assert_eq!(run("sh", ["-c", "echo ok"]).unwrap(), "ok\n");
    }
}
