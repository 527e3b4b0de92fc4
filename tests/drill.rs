//! `kcbackup drill` end to end: it passes on good sets of every layout and
//! `list` shows it; it fails (exit 3) naming the check on a corrupted object
//! and on a dump missing a row; it leaves no server, scratch or sandbox
//! directory behind, also on failure and after SIGTERM in the middle.

mod common;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcbackup::layout::Layout;
use serde_json::Value;
use support::tamper::{drop_first_row, edit_dump, object_files, paths_of_object};
use support::{Env, Run, env, flip_byte, num, text};

/// A store with a complete set, and a work directory for the drill's
/// scratch (`scratch/`) and temporary files (`tmp/`, as TMPDIR).
fn backed_up(layout: Layout) -> (Env, String, tempfile::TempDir) {
    let env = env(layout);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    let work = tempfile::Builder::new()
        .prefix("kcdrill-")
        .tempdir()
        .unwrap();
    fs::create_dir(work.path().join("scratch")).unwrap();
    fs::create_dir(work.path().join("tmp")).unwrap();
    (env, set, work)
}

fn drill_command(env: &Env, work: &Path, set: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcbackup"));
    cmd.args([
        "--config",
        env.config.to_str().unwrap(),
        "drill",
        set,
        "--json",
    ])
    .arg("--scratch")
    .arg(work.join("scratch"))
    .env("TMPDIR", work.join("tmp"));
    cmd
}

fn drill(env: &Env, work: &Path, set: &str) -> Run {
    let out = drill_command(env, work, set).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The check called `name` in a drill report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Nothing of the drill is left: no process, scratch, sandbox or
/// credentials directory.
fn assert_clean(work: &Path) {
    let procs = processes_using(work);
    assert!(procs.is_empty(), "processes left: {procs:#?}");
    for sub in ["scratch", "tmp"] {
        let left: Vec<_> = fs::read_dir(work.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in {sub}/: {left:?}");
    }
}

fn passes(layout: Layout) {
    let (env, set, work) = backed_up(layout);
    let run = drill(&env, work.path(), &set);
    assert_eq!(run.code, 0, "{:#}\n{}", run.json, run.stderr);
    let r = &run.json;
    assert_eq!(text(r, "set"), set);
    assert_eq!(r["ok"], true);
    let mut names = vec![
        "database load",
        "attachment restore",
        "config restore",
        "row counts",
        "kopano version",
        "storage backend",
        "attachments present",
        "attachment checksums",
    ];
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c:#}");
        names.retain(|n| c["name"] != *n);
    }
    assert!(names.is_empty(), "checks not run: {names:?}");
    let e = &env.store.expected;
    assert_eq!(num(r, "referenced"), e.referenced.len() as u64);
    assert_eq!(num(r, "rows"), e.row_counts.values().sum::<u64>());
    assert!(num(r, "sql_bytes") > 0);
    if layout != Layout::Database {
        assert!(num(r, "attachment_bytes") > 0, "{r:#}");
    }
    let d = &r["durations"];
    let s = |p: &str| d[p].as_f64().unwrap();
    // The attachments are restored while the server starts and loads the
    // dump: those phases overlap, the rest follow one another.
    let phases = (s("server_start") + s("database_load")).max(s("attachment_restore"))
        + s("config_restore")
        + s("checks");
    let every_phase = s("server_start")
        + s("database_load")
        + s("attachment_restore")
        + s("config_restore")
        + s("checks");
    assert!(d["server_start"].as_f64().unwrap() > 0.0, "{d:#}");
    assert!(d["database_load"].as_f64().unwrap() > 0.0, "{d:#}");
    assert!(d["cleanup"].as_f64().unwrap() > 0.0, "{d:#}");
    // The recovery time covers every phase up to the verdict, not the cleanup.
    let total = d["total"].as_f64().unwrap();
    assert!(total >= phases && total < every_phase + 5.0, "{d:#}");
    assert_clean(work.path());

    // The drill is on record, and `list` shows it.
    let list = env.run(&["list", "--json"]);
    let line = &list.json.as_array().unwrap()[0];
    assert_eq!(text(line, "id"), set);
    assert_eq!(line["last_drill"]["ok"], true, "{line:#}");
    assert_eq!(line["last_drill"]["recovery_s"], d["total"]);
}

#[test]
fn a_drill_of_a_files_set_passes_and_list_shows_it() {
    passes(Layout::FilesV1 { l1: 10, l2: 20 });
}

#[test]
fn a_drill_of_a_files_v2_set_passes() {
    passes(Layout::FilesV2);
}

#[test]
fn a_drill_of_a_database_set_passes() {
    passes(Layout::Database);
}

#[test]
fn a_drill_fails_on_a_corrupted_object() {
    let (env, set, work) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    let good = drill(&env, work.path(), &set);
    assert_eq!(good.code, 0, "{}", good.stderr);
    let object = object_files(&env.repo)
        .into_iter()
        .find(|o| fs::metadata(o).unwrap().len() > 200)
        .unwrap();
    let paths = paths_of_object(&env.set_dir(&set), &object);
    flip_byte(&object, 100);

    let run = drill(&env, work.path(), &set);
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    assert_eq!(run.json["ok"], false);
    let failed = check(&run.json, "attachment restore");
    assert_eq!(failed["ok"], false);
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        paths.iter().any(|p| detail.contains(p.as_str())),
        "none of {paths:?} in {detail}"
    );
    // The database side was still checked, and passed.
    assert_eq!(check(&run.json, "row counts")["ok"], true);
    assert_clean(work.path());
    // `list` shows the newest drill: the failed one.
    let list = env.run(&["list", "--json"]);
    assert_eq!(list.json[0]["last_drill"]["ok"], false, "{:#}", list.json);
    let kept = fs::read_dir(env.repo.join("drills")).unwrap().count();
    assert_eq!(kept, 2, "one record per drill");
}

#[test]
fn a_drill_fails_on_a_dump_missing_a_row() {
    let (env, set, work) = backed_up(Layout::FilesV2);
    edit_dump(&env.set_dir(&set), |sql| {
        drop_first_row(sql, "singleinstances")
    });
    let run = drill(&env, work.path(), &set);
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    // The tampered dump loaded: only the restored data shows the damage.
    assert_eq!(
        check(&run.json, "database load")["ok"],
        true,
        "{:#}",
        run.json
    );
    let rows = check(&run.json, "row counts");
    assert_eq!(rows["ok"], false);
    let want = env.store.expected.row_counts["singleinstances"];
    let detail = rows["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "singleinstances: {want} in the dump, {} restored",
            want - 1
        )),
        "{detail}"
    );
    assert_clean(work.path());
}

/// Waits until `path_of` finds something, or panics after a minute.
fn wait_for(what: &str, path_of: impl Fn() -> Option<PathBuf>) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = path_of() {
            return p;
        }
        assert!(Instant::now() < deadline, "no {what} within a minute");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first `kcbackup-drill-*/kcsb-*` directory under `scratch`.
fn sandbox_dir(scratch: &Path) -> Option<PathBuf> {
    let drill = fs::read_dir(scratch).ok()?.flatten().next()?.path();
    let sandbox = fs::read_dir(&drill)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("kcsb-"))?;
    Some(sandbox.path())
}

#[test]
fn a_signal_in_the_middle_cleans_up_and_exits_143_or_130() {
    let (env, set, work) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    let scratch = work.path().join("scratch");
    // Once while the server starts, once while the dump loads.
    use nix::sys::signal::Signal::{SIGINT, SIGTERM};
    for (moment, signal, code) in [
        ("mysqld.sock", SIGTERM, 143),
        ("data/kopano", SIGTERM, 143),
        ("data/kopano", SIGINT, 130),
    ] {
        let child = drill_command(&env, work.path(), &set)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(moment, || {
            sandbox_dir(&scratch)
                .map(|d| d.join(moment))
                .filter(|p| p.exists())
        });
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{signal} at {moment}: {stderr}"
        );
        // One line about the drill's own throwaway server, never advice
        // that reads as if production held a partial load.
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("throwaway MariaDB")
                && last.contains("were removed")
                && last.contains("production database and attachments were not touched")
                && !last.contains("drop it"),
            "{signal} at {moment}: {stderr}"
        );
        assert_clean(work.path());
    }
    // An interrupted drill is no verdict: nothing recorded.
    assert!(!env.repo.join("drills").exists());
}

#[test]
fn keep_leaves_the_scratch_with_the_stopped_server() {
    let (env, set, work) = backed_up(Layout::FilesV1 { l1: 7, l2: 5 });
    let mut cmd = drill_command(&env, work.path(), &set);
    let out = cmd.arg("--keep").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = PathBuf::from(text(&report, "kept"));
    assert!(kept.starts_with(work.path().join("scratch")), "{kept:?}");
    assert!(kept.join("attachments").is_dir() && kept.join("config").is_dir());
    let sandbox = sandbox_dir(&work.path().join("scratch")).expect("the kept sandbox");
    assert!(sandbox.join("data/kopano").is_dir());
    // Kept files, but no server left running.
    assert!(processes_using(work.path()).is_empty());
    fs::remove_dir_all(&kept).unwrap();
    assert_clean(work.path());
}

#[test]
fn a_failed_load_speaks_of_the_throwaway_server_not_of_production() {
    let (env, set, work) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    // A statement the server refuses, after the first tables were loaded.
    edit_dump(&env.set_dir(&set), |sql| {
        // At a line start: the generator hides look-alikes inside strings.
        sql.replacen(
            "\nINSERT INTO `singleinstances` VALUES",
            "\nINSERT INTO `no_such_table` VALUES (1);\nINSERT INTO `singleinstances` VALUES",
            1,
        )
    });
    let run = drill(&env, work.path(), &set);
    assert_eq!(run.code, 3, "{:#}\n{}", run.json, run.stderr);
    let load = check(&run.json, "database load");
    let detail = load["detail"].as_str().unwrap();
    assert_eq!(load["ok"], false, "{detail}");
    assert!(
        detail.contains("the drill's throwaway MariaDB (not the production server)")
            && detail.contains("removed with the drill")
            && !detail.contains("drop it"),
        "{detail}"
    );
    assert_clean(work.path());
}

#[test]
fn an_interrupted_kept_drill_says_where_its_scratch_is() {
    let (env, set, work) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    let scratch = work.path().join("scratch");
    let child = drill_command(&env, work.path(), &set)
        .arg("--keep")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("data/kopano", || {
        sandbox_dir(&scratch)
            .map(|d| d.join("data/kopano"))
            .filter(|p| p.exists())
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    let kept = fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("kept in {}", kept.display()))
            && last.contains("production database and attachments were not touched"),
        "{stderr}"
    );
    assert!(sandbox_dir(&scratch).is_some(), "the kept server's files");
    assert!(processes_using(work.path()).is_empty());
    fs::remove_dir_all(&kept).unwrap();
    assert_clean(work.path());
}
