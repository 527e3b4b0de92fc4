//! A full repository disk: a size-limited tmpfs as the repository, filled
//! by the test at the moment a backup is frozen (SIGSTOP) in its dump, its
//! capture or before its manifest, and before a backup starts. Each time:
//! exit 1, one message naming ENOSPC, nothing published, the earlier set
//! verifies; after the space is freed the next backup succeeds and nothing
//! is left behind. Needs root (mount); prints SKIPPED otherwise.

mod common;
mod faultkit;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use faultkit::{Fx, HeldDump, V1, work_file_len};
use kcbackup::generator::add_attachments;
use nix::sys::signal::Signal;

const PAGE: u64 = 4096;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(at)
            .output()
            .expect("running mount");
        assert!(out.status.success(), "mount: {out:?}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `path` (a new file) until no page is free, then
/// gives `headroom` bytes back.
fn fill(path: &Path, headroom: u64) {
    let mut f = File::create(path).unwrap();
    for chunk in [1 << 20, PAGE as usize, 1] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(headroom)).unwrap();
}

fn assert_enospc(out: &faultkit::Out, what: &str) -> String {
    assert_eq!(out.code, Some(1), "{what}: {}", out.stderr);
    let msg = out.assert_one_message(what);
    assert!(
        msg.contains("No space left on device") || msg.contains("ENOSPC"),
        "{what}: the message does not name the full disk: {msg}"
    );
    msg
}

#[test]
fn a_full_repository_disk_fails_cleanly_in_dump_capture_and_manifest() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED a_full_repository_disk...: mounting a tmpfs needs root");
        return;
    }
    let mut fx = Fx::new(V1, |_| {});
    let mount = fx.dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&mount, 64);
    let repo = mount.join("repo");
    let filler = mount.join("filler");
    let held = HeldDump::new(fx.dir.path());
    let plain = fx.config_with("tmpfs", &repo, "");
    let with_held = fx.config_with("tmpfs-held", &repo, &held.toml());

    let first = fx.run_with(&plain, &["backup", "--json"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let first = first.set().unwrap();
    let config_size = fs::metadata(repo.join("sets").join(&first).join("config.tar.zst"))
        .unwrap()
        .len();
    let mut messages = Vec::new();

    // 1. Full before the run starts.
    fill(&filler, 0);
    let out = fx.run_with(&plain, &["backup", "--json"]);
    messages.push(("before the run", assert_enospc(&out, "full before the run")));

    // 2..4: frozen at a point, the disk filled, let go.
    fs::remove_file(&filler).unwrap();
    let mut seed = 900;
    for phase in ["dump", "capture", "manifest"] {
        // A run can outpace the poll and publish before it is frozen:
        // that attempt does not count; it is tried again with new data.
        let mut attempts = 0;
        let out = loop {
            attempts += 1;
            seed += 1;
            add_attachments(common::server(), &mut fx.store, 40, seed).unwrap();
            held.reset();
            let config = if phase == "dump" { &with_held } else { &plain };
            let mut bg = fx.spawn_with(config, &["backup", "--json"]);
            let r = repo.clone();
            let hit = match phase {
                "dump" => bg.wait_for(|| held.pausing.exists()),
                "capture" => bg.stop_when(|| !faultkit::names(&r.join("objects/.tmp")).is_empty()),
                _ => bg.stop_when(|| work_file_len(&r, "config.tar.zst").is_some()),
            };
            assert!(hit, "{phase}: the backup ended before the point");
            // Before the manifest: room for the config archive, not for more.
            let headroom = if phase == "manifest" {
                config_size.div_ceil(PAGE) * PAGE
            } else {
                0
            };
            fill(&filler, headroom);
            bg.signal(Signal::SIGCONT);
            fs::write(&held.release, "").unwrap();
            let out = bg.finish();
            if out.code == Some(0) && attempts < 5 {
                println!("disk full {phase}: attempt {attempts} finished before the disk was full");
                fs::remove_dir_all(repo.join("sets").join(out.set().unwrap())).unwrap();
                fs::remove_file(&filler).unwrap();
                continue;
            }
            break out;
        };
        let what = format!("full during {phase}");
        messages.push((phase, assert_enospc(&out, &what)));
        assert_eq!(
            faultkit::published_sets(&repo),
            vec![first.clone()],
            "{what}: nothing published"
        );
        let v = fx.run_with(&plain, &["verify", &first, "--json"]);
        assert_eq!(v.code, Some(0), "{what}: the earlier set: {}", v.stderr);
        fs::remove_file(&filler).unwrap();
        faultkit::wait_gone(&fx.tmp);
        let next = fx.run_with(&plain, &["backup", "--json"]);
        assert_eq!(
            next.code,
            Some(0),
            "{what}: the next backup: {}",
            next.stderr
        );
        let left = faultkit::leftovers_of(&repo, &fx.tmp);
        assert!(left.is_empty(), "{what}: left behind: {left:?}");
        // Keep the repository as it was: only the first set.
        fs::remove_dir_all(repo.join("sets").join(next.set().unwrap())).unwrap();
    }
    for (phase, msg) in &messages {
        println!("disk full {phase}: {msg}");
    }
    let manifest_msg = &messages.last().unwrap().1;
    assert!(
        manifest_msg.contains("manifest"),
        "the last case did not hit the manifest: {manifest_msg}"
    );
}
