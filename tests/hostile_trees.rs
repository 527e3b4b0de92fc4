//! Hostile attachment trees against the real MariaDB and the real binary:
//! symlinks in and out of the tree (a fan-out directory moved to another
//! disk, links stored as links), FIFOs, sockets, devices, non-UTF-8 names,
//! empty files, and a referenced file replaced by a directory, a FIFO, a
//! link out of the tree, or made unreadable. Each backup either publishes a
//! set that restores (and drills), or says `incomplete` (exit 3) naming the id.

mod common;
mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use kcbackup::layout::Layout;
use serde_json::Value;
use support::{Env, Run, env, num, text};

const FILES: Layout = Layout::FilesV1 { l1: 10, l2: 20 };

/// The referenced data files (relative) below `dir`, sorted, with their ids.
fn referenced_under(env: &Env, dir: &str) -> Vec<(u32, PathBuf)> {
    env.store
        .expected
        .instances
        .iter()
        .filter_map(|(id, info)| Some((*id, info.path.clone()?)))
        .filter(|(_, p)| p.starts_with(dir))
        .collect()
}

/// One referenced data file: its id and path relative to the store.
fn one_referenced(env: &Env, nth: usize) -> (u32, PathBuf) {
    let all = referenced_under(env, "");
    all[nth % all.len()].clone()
}

fn warnings(run: &Run) -> Vec<String> {
    run.json["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_warned(run: &Run, needles: &[&str]) {
    let w = warnings(run);
    for needle in needles {
        assert!(
            w.iter().any(|l| l.contains(needle)),
            "no warning mentions {needle:?}: {w:#?}"
        );
    }
}

fn missing_ids(run: &Run) -> Vec<u64> {
    run.json["attachments"]["missing_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// `restore SET --to-attachments DIR --json`.
fn restore_attachments(env: &Env, set: &str, dir: &Path) -> Run {
    env.run_any(&[
        "restore",
        set,
        "--to-attachments",
        dir.to_str().unwrap(),
        "--json",
    ])
}

/// `drill SET --json` with its scratch and TMPDIR in a fresh directory.
fn drill(env: &Env, set: &str) -> Run {
    let work = tempfile::Builder::new()
        .prefix("kchostile-")
        .tempdir()
        .unwrap();
    fs::create_dir(work.path().join("scratch")).unwrap();
    fs::create_dir(work.path().join("tmp")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kcbackup"))
        .args([
            "--config",
            env.config.to_str().unwrap(),
            "drill",
            set,
            "--json",
        ])
        .arg("--scratch")
        .arg(work.path().join("scratch"))
        .env("TMPDIR", work.path().join("tmp"))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_drill_passes(env: &Env, set: &str) {
    let run = drill(env, set);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(run.json["ok"], true, "{:#}", run.json);
}

/// Backup, verify, restore: the set is complete and comes back whole.
fn complete_and_restored(env: &Env) -> (Run, String, tempfile::TempDir) {
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(text(&run.json, "status"), "complete");
    let set = text(&run.json, "set").to_string();
    let verify = env.verify(&set);
    assert_eq!(verify.code, 0, "{:#}", verify.json);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("att");
    let restored = restore_attachments(env, &set, &target);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    (run, set, out)
}

/// What a path is, without following it: `link -> target`, `dir`, or the content.
fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if meta.file_type().is_symlink() {
        format!("link -> {}", fs::read_link(path).unwrap().display())
    } else if meta.is_dir() {
        "dir".into()
    } else {
        format!("file {:?}", fs::read(path).unwrap())
    }
}

#[test]
fn a_fan_out_directory_moved_to_another_disk_is_captured_as_if_in_place() {
    moved_to_another_disk(FILES);
}

#[test]
fn a_files_v2_directory_moved_to_another_disk_is_captured_as_if_in_place() {
    moved_to_another_disk(Layout::FilesV2);
}

/// Moves the top directory of a referenced instance to a tmpfs and links it.
fn moved_to_another_disk(layout: Layout) {
    let env = env(layout);
    let att = &env.store.attachment_path;
    let (_, first) = one_referenced(&env, 0);
    let top = first
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap()
        .to_string();
    let moved = referenced_under(&env, &top);
    assert!(!moved.is_empty());
    // Another filesystem (tmpfs), as a second disk would be.
    let disk2 = tempfile::Builder::new()
        .prefix("kcdisk2-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let before: Vec<String> = moved.iter().map(|(_, p)| describe(&att.join(p))).collect();
    fs::create_dir_all(disk2.path().join(&top)).unwrap();
    for entry in fs::read_dir(att.join(&top)).unwrap() {
        let entry = entry.unwrap();
        let to = disk2.path().join(&top).join(entry.file_name());
        // A copy, then removal: rename cannot cross filesystems.
        Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(&to)
            .status()
            .unwrap();
    }
    fs::remove_dir_all(att.join(&top)).unwrap();
    symlink(disk2.path().join(&top), att.join(&top)).unwrap();

    let (run, set, out) = complete_and_restored(&env);
    let j = &run.json;
    let e = &env.store.expected;
    assert_eq!(num(j, "attachments.present"), e.referenced.len() as u64);
    assert_eq!(num(j, "attachments.capture.followed_dirs"), 1);
    let other = &j["attachments"]["capture"]["followed_other_device"];
    assert!(other.to_string().contains("kcdisk2-"), "{j:#}");
    // The index records the directory, and where the link pointed.
    let index = support::tamper::read_index(&env.set_dir(&set));
    let three = index.iter().find(|e| e.path == top).unwrap();
    assert_eq!(three.kind, kcbackup::attachments::EntryKind::Dir);
    assert_eq!(
        three.target.as_deref(),
        Some(disk2.path().join(&top).to_str().unwrap())
    );
    // Restored in place: a real directory with the data.
    let restored = out.path().join("att");
    assert_eq!(describe(&restored.join(&top)), "dir");
    let after: Vec<String> = moved
        .iter()
        .map(|(_, p)| describe(&restored.join(p)))
        .collect();
    assert_eq!(after, before);
    assert_drill_passes(&env, &set);
}

/// `[attachments] follow_symlinks = "none"` in the env's config.
fn follow_none(env: &Env) {
    let mut config = fs::read_to_string(&env.config).unwrap();
    config.push_str("\n[attachments]\nfollow_symlinks = \"none\"\n");
    fs::write(&env.config, config).unwrap();
}

#[test]
fn with_follow_symlinks_none_the_link_is_kept_and_what_is_behind_it_missing() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    let moved = referenced_under(&env, "3");
    let disk2 = tempfile::tempdir().unwrap();
    fs::rename(att.join("3"), disk2.path().join("3")).unwrap();
    symlink(disk2.path().join("3"), att.join("3")).unwrap();
    follow_none(&env);

    let run = env.backup(&[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(text(&run.json, "status"), "incomplete");
    let mut want: Vec<u64> = moved.iter().map(|(id, _)| u64::from(*id)).collect();
    want.sort_unstable();
    want.dedup();
    assert_eq!(missing_ids(&run), want);
    assert!(run.stderr.contains("INCOMPLETE"), "{}", run.stderr);
    assert_warned(&run, &["3 -> ", "not followed"]);
    // What was published restores: the link as a link.
    let set = text(&run.json, "set").to_string();
    let out = tempfile::tempdir().unwrap();
    let restored = restore_attachments(&env, &set, &out.path().join("att"));
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(
        describe(&out.path().join("att/3")),
        format!("link -> {}", disk2.path().join("3").display())
    );
}

#[test]
fn links_anywhere_in_the_tree_are_stored_and_restored_as_links() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    let (_, data) = one_referenced(&env, 0);
    fs::create_dir_all(att.join("9/x")).unwrap();
    let links = [
        ("9/x/abs", "/etc/hostname".to_string()),
        ("9/x/rel", "../../1".to_string()),
        ("9/x/up", "../..".to_string()),
        ("9/x/dangling", "../nowhere".to_string()),
        ("9/x/dangling-abs", "/nonexistent/kcbackup".to_string()),
        ("9/x/file", format!("../../{}", data.display())),
    ];
    for (at, target) in &links {
        symlink(target, att.join(at)).unwrap();
    }

    let (run, set, out) = complete_and_restored(&env);
    assert_warned(
        &run,
        &[
            "9/x/abs -> /etc",
            "9/x/rel -> ../../1",
            "(dangling)",
            "9/x/up -> ../..: ",
        ],
    );
    let restored = out.path().join("att");
    for (at, target) in &links {
        assert_eq!(
            describe(&restored.join(at)),
            format!("link -> {target}"),
            "{at}"
        );
    }
    assert_drill_passes(&env, &set);
}

#[test]
fn a_tampered_index_with_an_entry_below_a_link_is_refused_whole() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), att.join("9/0/out")).unwrap();
    follow_none(&env);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    let set_dir = env.set_dir(&set);
    support::tamper::edit_index(&set_dir, |entries| {
        let at = entries.iter().position(|e| e.path == "9/0/out").unwrap();
        let mut evil = entries
            .iter()
            .find(|e| e.kind == kcbackup::attachments::EntryKind::File)
            .unwrap()
            .clone();
        evil.path = "9/0/out/evil".into();
        entries.insert(at + 1, evil);
    });
    support::tamper::reseal(&set_dir, |_| {});
    let target = tempfile::tempdir().unwrap();
    let restored = restore_attachments(&env, &set, &target.path().join("att"));
    assert_eq!(restored.code, 3, "{}", restored.stderr);
    assert!(
        restored.stderr.contains("below the symlink 9/0/out"),
        "{}",
        restored.stderr
    );
    assert!(!target.path().join("att").exists());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn a_referenced_path_that_is_a_link_counts_only_if_its_target_is_captured() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    // Moved inside the tree and linked: kopano-server reads it, so does the set.
    let (_, inside) = one_referenced(&env, 1);
    fs::create_dir_all(att.join("spare")).unwrap();
    let name = inside.file_name().unwrap();
    fs::rename(att.join(&inside), att.join("spare").join(name)).unwrap();
    symlink(Path::new("../../spare").join(name), att.join(&inside)).unwrap();

    let (_, set, out) = complete_and_restored(&env);
    assert!(describe(&out.path().join("att").join(&inside)).starts_with("link -> ../../spare/"));
    assert_drill_passes(&env, &set);

    // Linked out of the tree: the data is not in the set, the id is named.
    let (id, away) = one_referenced(&env, 2);
    let disk2 = tempfile::tempdir().unwrap();
    fs::rename(att.join(&away), disk2.path().join("data")).unwrap();
    symlink(disk2.path().join("data"), att.join(&away)).unwrap();
    let run = env.backup(&[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(missing_ids(&run), [u64::from(id)]);
    assert!(run.stderr.contains(&id.to_string()), "{}", run.stderr);
    assert_warned(&run, &[&format!("{} -> ", away.display())]);
}

#[test]
fn fifos_sockets_devices_odd_names_and_empty_files_are_warned_and_harmless() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    fs::create_dir_all(att.join("4/0")).unwrap();
    // A FIFO no one writes to: opening it for reading would hang the backup.
    nix::unistd::mkfifo(
        &att.join("4/0/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(att.join("4/0/socket")).unwrap();
    nix::sys::stat::mknod(
        &att.join("4/0/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let odd_file = att.join("4/0").join(OsStr::from_bytes(b"caf\xe9"));
    fs::write(&odd_file, "latin-1 name").unwrap();
    let odd_dir = att.join(OsStr::from_bytes(b"\xff\xfe"));
    fs::create_dir(&odd_dir).unwrap();
    fs::write(odd_dir.join("inside"), "below an odd name").unwrap();
    fs::write(att.join("4/0/empty"), "").unwrap();
    fs::write(att.join("testfile"), "").unwrap();

    let (run, set, out) = complete_and_restored(&env);
    assert_warned(
        &run,
        &[
            "4/0/fifo: a FIFO",
            "4/0/socket: a socket",
            "4/0/null: a character device",
            "not valid UTF-8",
        ],
    );
    let restored = out.path().join("att");
    assert_eq!(describe(&restored.join("4/0/empty")), "file []");
    assert_eq!(describe(&restored.join("testfile")), "file []");
    for special in ["fifo", "socket", "null"] {
        assert!(
            !restored.join("4/0").join(special).exists(),
            "{special} restored"
        );
    }
    assert_drill_passes(&env, &set);
}

/// A backup that must say `incomplete` naming `id`, and whose set restores.
fn incomplete_naming(env: &Env, run: &Run, id: u32) {
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(text(&run.json, "status"), "incomplete");
    assert_eq!(missing_ids(run), [u64::from(id)]);
    assert!(
        run.stderr.contains(&format!("missing instance ids: {id}")),
        "{}",
        run.stderr
    );
    let set = text(&run.json, "set").to_string();
    let out = tempfile::tempdir().unwrap();
    let restored = restore_attachments(env, &set, &out.path().join("att"));
    assert_eq!(restored.code, 0, "{}", restored.stderr);
}

#[test]
fn a_directory_fifo_or_dangling_link_in_place_of_a_referenced_file_is_missing_by_id() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    let (id, path) = one_referenced(&env, 3);
    fs::remove_file(att.join(&path)).unwrap();
    fs::create_dir(att.join(&path)).unwrap();
    fs::write(att.join(&path).join("x"), "not the data").unwrap();
    let run = env.backup(&[]);
    incomplete_naming(&env, &run, id);

    fs::remove_dir_all(att.join(&path)).unwrap();
    nix::unistd::mkfifo(
        &att.join(&path),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let run = env.backup(&[]);
    incomplete_naming(&env, &run, id);
    assert_warned(&run, &[&format!("{}: a FIFO", path.display())]);

    fs::remove_file(att.join(&path)).unwrap();
    symlink("../../nowhere", att.join(&path)).unwrap();
    let run = env.backup(&[]);
    incomplete_naming(&env, &run, id);
    assert_warned(
        &run,
        &[&format!("{} -> ../../nowhere (dangling)", path.display())],
    );
}

#[test]
fn an_unreadable_referenced_file_is_missing_by_id() {
    let env = env(FILES);
    let att = &env.store.attachment_path;
    let (id, path) = one_referenced(&env, 4);
    fs::set_permissions(
        att.join(&path),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    // Root reads mode 000 anyway: the backup runs without the two
    // capabilities that let it, as a confined service would.
    let drop = "-dac_override,-dac_read_search";
    let out = Command::new("setpriv")
        .arg(format!("--bounding-set={drop}"))
        .arg(format!("--inh-caps={drop}"))
        .arg(env!("CARGO_BIN_EXE_kcbackup"))
        .args(["--config", env.config.to_str().unwrap(), "backup", "--json"])
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    incomplete_naming(&env, &run, id);
    assert_warned(&run, &[&format!("{}: Permission denied", path.display())]);
}
