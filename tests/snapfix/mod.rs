//! Fixtures for the snapshot tests: filesystems on loop devices backed by
//! sparse image files in a temporary directory, unmounted and detached by a
//! guard even when a test fails. Never touches a real disk.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("SKIPPED {test}: loop devices and mounts need root");
    }
    root
}

/// True when `fstype` filesystems on loop devices can be made and mounted
/// here (root, loop devices, kernel support, mkfs); otherwise prints why not.
pub fn loop_fs_or_skip(test: &str, fstype: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let known = fs::read_to_string("/proc/filesystems").is_ok_and(|f| {
        f.lines()
            .any(|l| l.trim_start_matches("nodev").trim() == fstype)
    });
    let why = if !Path::new("/dev/loop-control").exists() {
        "no loop devices (/dev/loop-control)".to_string()
    } else if !known {
        format!("the kernel does not know {fstype}")
    } else if Command::new(format!("mkfs.{fstype}"))
        .arg("-V")
        .output()
        .is_err()
    {
        format!("mkfs.{fstype} is not installed")
    } else {
        return true;
    };
    println!("SKIPPED {test}: {why}");
    false
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mount points and sources in /proc/self/mountinfo that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A filesystem on a loop device, mounted in a temporary directory.
pub struct LoopFs {
    pub dir: tempfile::TempDir,
    pub device: String,
    pub mount: PathBuf,
    mounts: Vec<PathBuf>,
}

impl LoopFs {
    /// `size_mib` of sparse image, formatted with `mkfs.<fstype>`.
    pub fn new(fstype: &str, size_mib: u64) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("kcbt-loop-")
            .tempdir()
            .expect("tempdir");
        let image = dir.path().join("image");
        let f = fs::File::create(&image).expect("create image");
        f.set_len(size_mib << 20).expect("size image");
        drop(f);
        let device = sh(
            "losetup",
            &["--find", "--show", image.to_str().expect("utf-8 path")],
        )
        .trim()
        .to_string();
        let mount = dir.path().join("mnt");
        fs::create_dir(&mount).expect("mount dir");
        // From here on Drop detaches the device, even if mkfs fails.
        let mut me = LoopFs {
            dir,
            device,
            mount,
            mounts: Vec::new(),
        };
        let mkfs = format!("mkfs.{fstype}");
        match fstype {
            "btrfs" | "xfs" => sh(&mkfs, &["-f", "-q", &me.device]),
            _ => sh(&mkfs, &["-F", "-q", &me.device]),
        };
        let (device, mount) = (me.device.clone(), me.mount.clone());
        me.mount_at(&device, &mount, &[]);
        me
    }

    /// Mounts `what` at `at` (with `-o opts`), unmounted again on drop.
    pub fn mount_at(&mut self, what: &str, at: &Path, opts: &[&str]) {
        let mut args = Vec::new();
        if !opts.is_empty() {
            args.push("-o".to_string());
            args.push(opts.join(","));
        }
        args.push(what.into());
        args.push(at.to_string_lossy().into_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sh("mount", &args);
        self.mounts.push(at.to_path_buf());
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Busy after a failed test: detach it anyway so nothing is left.
                let _ = Command::new("umount").arg("--lazy").arg(m).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Writes `files` (relative path, content) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
    }
}

/// The body of each test binary's hidden `hold_snapshot_until_signalled`
/// test: takes a snapshot of `$KCBT_HOLD_ATTACHMENTS`, says `READY <view>`,
/// then blocks like the backup does while the dump runs (`sleeper`: waiting
/// for a child; `poll`: a loop calling `signals::check`; `stubborn`: a loop
/// that never checks), and exits with the code kcbackup would use. Does nothing when not started by [`Holder`].
pub fn hold_snapshot_until_signalled() {
    use kcbackup::{error, signals, snapshot};
    let Ok(attachments) = std::env::var("KCBT_HOLD_ATTACHMENTS") else {
        return;
    };
    let base = std::env::var("KCBT_HOLD_BASE").unwrap_or_else(|_| "/tmp".into());
    let mode = std::env::var("KCBT_HOLD_MODE").unwrap_or_default();
    signals::install().unwrap();
    let req = snapshot::Request {
        mount_base: base.into(),
        ..snapshot::Request::new(kcbackup::settings::SnapshotMethod::Auto, attachments)
    };
    let result = (|| -> anyhow::Result<()> {
        let plan = snapshot::plan(&req)?;
        let snap = snapshot::take(&plan, "held")?;
        println!("\nREADY {}", snap.view_path(&plan.source).display());
        if mode == "sleeper" {
            let mut child = Command::new("sleep").arg("60").spawn()?;
            let guard = signals::terminate_on_signal(child.id());
            let status = child.wait()?;
            drop(guard);
            signals::check()?;
            anyhow::bail!("sleep ended by itself: {status}");
        }
        loop {
            // `stubborn` never looks: only a forced exit ends it.
            if mode != "stubborn" {
                signals::check()?;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })();
    let err = signals::explain(result.unwrap_err());
    eprintln!("holder: {err:#}");
    std::process::exit(error::exit_for(&err) as i32);
}

/// A child process of the current test binary holding a snapshot.
pub struct Holder {
    pub child: std::process::Child,
    /// Where the child sees the attachment directory inside its snapshot.
    pub view: PathBuf,
}

impl Holder {
    /// Starts the hidden helper test in `mode` (`sleeper` or `poll`) and
    /// waits until it holds its snapshot.
    pub fn start(attachments: &Path, base: &Path, mode: &str) -> Holder {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "hold_snapshot_until_signalled"])
            .args(["--nocapture", "--test-threads=1"])
            .env("KCBT_HOLD_ATTACHMENTS", attachments)
            .env("KCBT_HOLD_BASE", base)
            .env("KCBT_HOLD_MODE", mode)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let view = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("READY ").map(PathBuf::from));
        let Some(view) = view else {
            let _ = child.kill();
            panic!("the holder never got its snapshot: {:?}", child.wait());
        };
        Holder { child, view }
    }

    /// Sends `sig` and returns the exit code (`None`: killed by a signal).
    pub fn signal_and_wait(self, sig: nix::sys::signal::Signal) -> Option<i32> {
        self.signals_and_wait(&[sig])
    }

    /// Sends each of `sigs` (100 ms apart), then waits for the exit code.
    pub fn signals_and_wait(mut self, sigs: &[nix::sys::signal::Signal]) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        for sig in sigs {
            nix::sys::signal::kill(pid, *sig).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let sig = sigs
            .last()
            .copied()
            .unwrap_or(nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(std::time::Instant::now() < deadline, "holder ignored {sig}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
