//! `kcbackup restore` against the real MariaDB: a set of every layout comes
//! back identical (tables, files with modes and mtimes, config), non-empty
//! targets are refused or, forced, cleaned into a quarantine folder.
//! Tampered and damaged sets: see restore_damage.rs.

mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kcbackup::layout::Layout;
use support::{Env, Run, env, num, text};

/// A generated store with a complete set; returns the env and the set id.
fn backed_up(layout: Layout) -> (Env, String) {
    let env = env(layout);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    (env, set)
}

/// `restore SET --json` as root on the shared server via the --mysql-*
/// flags (the store's own user may not create databases).
fn restore(env: &Env, set: &str, targets: &[&str]) -> Run {
    let pw = env.repo.parent().unwrap().join("root.pw");
    fs::write(&pw, "\n").unwrap();
    let socket = common::server().socket().to_str().unwrap().to_string();
    let mut args = vec!["restore", set, "--json", "--mysql-user", "root"];
    args.extend(["--mysql-socket", &socket]);
    args.extend(["--mysql-password-file", pw.to_str().unwrap()]);
    args.extend_from_slice(targets);
    env.run_any(&args)
}

/// `CHECKSUM TABLE` of every table of `db`, by table name.
fn table_checksums(db: &str) -> BTreeMap<String, String> {
    let tables = common::query(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}'"
    ));
    tables
        .into_iter()
        .map(|t| {
            let row = &common::query(&format!("CHECKSUM TABLE `{db}`.`{}`", t[0]))[0];
            (t[0].clone(), row[1].clone())
        })
        .collect()
}

/// What a restore must reproduce of one entry.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: &'static str,
    /// File content, or a symlink's target.
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Seconds and nanoseconds (not compared for symlinks).
    mtime: (i64, i64),
}

/// Every entry below `root` (files, directories, symlinks).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let (kind, data) = if meta.is_dir() {
                walk(root, &path, out);
                ("dir", Vec::new())
            } else if meta.file_type().is_symlink() {
                let link = fs::read_link(&path).unwrap();
                ("symlink", link.to_string_lossy().as_bytes().to_vec())
            } else {
                ("file", fs::read(&path).unwrap())
            };
            let mtime = if kind == "symlink" {
                (0, 0)
            } else {
                (meta.mtime(), meta.mtime_nsec())
            };
            let e = Entry {
                kind,
                data,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime,
            };
            out.insert(rel, e);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Gives a file and a directory of the tree other owners and modes, so the
/// restore has something to put back (owners only as root).
fn vary_owners_and_modes(root: &Path) {
    // The `database` layout may have no tree to speak of.
    let Some(rel) = common::verify::list_files(root)
        .into_iter()
        .find(|r| r.components().count() > 1)
    else {
        return;
    };
    let (file, dir) = (root.join(&rel), root.join(rel.parent().unwrap()));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&file, Some(4321), Some(4322)).unwrap();
        std::os::unix::fs::lchown(&dir, Some(4323), Some(4324)).unwrap();
    }
}

fn restores_identically(layout: Layout) {
    let env = env(layout);
    vary_owners_and_modes(&env.store.attachment_path);
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    let out = tempfile::tempdir().unwrap();
    let (att, cfg) = (out.path().join("att"), out.path().join("cfg"));
    let db = common::unique_db("restored");
    let run = restore(
        &env,
        &set,
        &[
            "--to-database",
            &db,
            "--to-attachments",
            att.to_str().unwrap(),
            "--to-config",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = &run.json;
    assert_eq!(text(j, "set"), set);
    assert_eq!(text(j, "database.database"), db);
    assert!(num(j, "database.bytes") > 0, "{j:#}");
    assert!(j["seconds"].as_f64().is_some() && j["database"]["seconds"].as_f64().is_some());

    // Every table equal, row for row.
    let source = table_checksums(&env.store.database);
    assert!(source.len() >= 8, "{source:?}");
    assert_eq!(table_checksums(&db), source);
    common::verify::database(&db, &env.store.expected, layout);

    // The attachment tree: same entries, bytes, modes and mtimes.
    let want = snapshot(&env.store.attachment_path);
    let got = snapshot(&att);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (rel, w) in &want {
        assert_eq!(got[rel], *w, "{} differs after restore", rel.display());
    }
    let files = want.values().filter(|v| v.kind == "file").count() as u64;
    assert_eq!(num(j, "attachments.files"), files);
    common::verify::tree(&att, &env.store.expected, layout);

    // The config directory, likewise.
    let want = snapshot(&env.store.config_dir);
    assert!(want.keys().any(|k| k.ends_with("server.cfg")));
    assert_eq!(snapshot(&cfg), want);
}

#[test]
fn a_files_set_restores_identically() {
    restores_identically(Layout::FilesV1 { l1: 10, l2: 20 });
}

#[test]
fn a_files_v1_7_5_set_restores_identically() {
    restores_identically(Layout::FilesV1 { l1: 7, l2: 5 });
}

#[test]
fn a_files_v2_set_restores_identically() {
    restores_identically(Layout::FilesV2);
}

#[test]
fn a_database_set_restores_identically() {
    restores_identically(Layout::Database);
}

#[test]
fn non_empty_targets_are_refused_and_forced_ones_quarantined() {
    let (env, set) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    let out = tempfile::tempdir().unwrap();
    let att = out.path().join("att");
    let db = common::unique_db("occupied");
    common::query(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.keep (x INT); INSERT INTO `{db}`.keep VALUES (7)"
    ));
    // A stale twin of a restored instance, and a file of no instance.
    let id = *env.store.expected.referenced.iter().next().unwrap();
    let twin = format!("{}/{}/{id}.gz", id % 10, (id / 10) % 20);
    let twin_is_data = env.store.attachment_path.join(&twin).exists();
    let stale = if twin_is_data {
        format!("{}/{}/{id}", id % 10, (id / 10) % 20)
    } else {
        twin
    };
    fs::create_dir_all(att.join(&stale).parent().unwrap()).unwrap();
    fs::write(att.join(&stale), b"stale data of an older instance").unwrap();
    fs::write(att.join("notes.txt"), b"not from the set").unwrap();
    let before = snapshot(&att);

    // Without --force: exit 2, nothing changed, in the database either.
    for targets in [
        vec!["--to-database", db.as_str()],
        vec!["--to-attachments", att.to_str().unwrap()],
        // A refused directory also stops the database restore before it starts.
        vec![
            "--to-database",
            &common::unique_db("untouched"),
            "--to-attachments",
            att.to_str().unwrap(),
        ],
    ] {
        let run = restore(&env, &set, &targets);
        assert_eq!(run.code, 2, "{targets:?}: {}", run.stderr);
        assert!(run.stderr.contains("not empty"), "{}", run.stderr);
        assert!(run.stderr.contains("--force"), "{}", run.stderr);
    }
    assert_eq!(snapshot(&att), before);
    assert_eq!(
        common::query_one(&format!("SELECT x FROM `{db}`.keep")),
        "7"
    );
    let untouched = common::query(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'untouched%{}%'",
        std::process::id()
    ));
    assert!(untouched.is_empty(), "{untouched:?}");
    assert!(!fs::read_dir(out.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("quarantine")
    }));
    // No target at all is a usage error too.
    assert_eq!(restore(&env, &set, &[]).code, 2);

    // With --force: the database replaced, the strays moved aside.
    let run = restore(
        &env,
        &set,
        &[
            "--force",
            "--to-database",
            &db,
            "--to-attachments",
            att.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(table_checksums(&db), table_checksums(&env.store.database));
    assert_eq!(
        common::query_one(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'keep'"
        )),
        "0"
    );
    let quarantine: Vec<PathBuf> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kcbackup-quarantine-")
        })
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let q = &quarantine[0];
    assert_eq!(
        text(&run.json, "attachments.quarantine"),
        q.to_str().unwrap()
    );
    assert_eq!(num(&run.json, "attachments.quarantined"), 2);
    assert_eq!(
        fs::read(q.join(&stale)).unwrap(),
        b"stale data of an older instance"
    );
    assert!(q.join("notes.txt").is_file());
    assert!(!att.join(&stale).exists(), "the stale twin still shadows");
    assert!(!att.join("notes.txt").exists());
    common::verify::tree(&att, &env.store.expected, env.store.spec.layout);

    // Forced again at once: a quarantine folder of its own, the first kept.
    fs::write(att.join("notes.txt"), b"a second stray").unwrap();
    let again = restore(
        &env,
        &set,
        &["--force", "--to-attachments", att.to_str().unwrap()],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    let q2 = PathBuf::from(text(&again.json, "attachments.quarantine"));
    assert_ne!(&q2, q);
    assert_eq!(fs::read(q2.join("notes.txt")).unwrap(), b"a second stray");
    assert_eq!(fs::read(q.join("notes.txt")).unwrap(), b"not from the set");
}

#[test]
fn a_server_with_a_small_max_allowed_packet_gets_a_clear_error() {
    let (env, set) = backed_up(Layout::Database);
    let small = kcbackup::sandbox::Sandbox::start(&Default::default()).unwrap();
    small.sql("SET GLOBAL max_allowed_packet = 65536").unwrap();
    let pw = env.repo.parent().unwrap().join("empty.pw");
    fs::write(&pw, "").unwrap();
    let run = env.run_any(&[
        "restore",
        &set,
        "--to-database",
        "kopano",
        "--mysql-socket",
        small.socket().to_str().unwrap(),
        "--mysql-user",
        "root",
        "--mysql-password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("max_allowed_packet (65536 bytes)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("SET GLOBAL max_allowed_packet"),
        "{}",
        run.stderr
    );
}

/// Tables, views, triggers and routines of `db`, with each table's rows.
fn schema_objects(db: &str) -> Vec<Vec<String>> {
    common::query(&format!(
        "SELECT 'table', TABLE_NAME, TABLE_TYPE, '' FROM information_schema.TABLES \
           WHERE TABLE_SCHEMA = '{db}' \
         UNION ALL SELECT 'trigger', TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT \
           FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}' \
         UNION ALL SELECT 'routine', ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION \
           FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}' \
         ORDER BY 1, 2"
    ))
}

fn row_counts(db: &str) -> BTreeMap<String, String> {
    common::query(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE'"
    ))
    .into_iter()
    .map(|t| {
        let n = common::query_one(&format!("SELECT COUNT(*) FROM `{db}`.`{}`", t[0]));
        (t[0].clone(), n)
    })
    .collect()
}

#[test]
fn tables_loaded_in_parallel_give_the_database_one_stream_gives() {
    let env = env(Layout::Database);
    // What is not per-table runs after the tables: a view, a trigger, a routine.
    let src = &env.store.database;
    // Unqualified: a trigger's and a routine's text is dumped as written.
    common::query(&format!(
        "USE `{src}`;\n\
         CREATE VIEW kcb_view AS SELECT COUNT(*) AS n FROM hierarchy;\n\
         CREATE TRIGGER kcb_trigger BEFORE INSERT ON versions \
           FOR EACH ROW SET NEW.micro = NEW.micro;\n\
         CREATE DEFINER = 'kopano'@'localhost' PROCEDURE kcb_proc() \
           SELECT COUNT(*) FROM kcb_view;\n"
    ));
    let run = env.backup(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let set = text(&run.json, "set").to_string();
    // Statements across chunk edges: the dump cut into small chunks.
    support::tamper::edit_dump_chunked(&env.set_dir(&set), 64 * 1024, |sql| sql);

    let (one, four) = (common::unique_db("single"), common::unique_db("parallel"));
    for (db, jobs, connections) in [(&one, "1", 1), (&four, "4", 5)] {
        let run = restore(&env, &set, &["--to-database", db, "--jobs", jobs]);
        assert_eq!(run.code, 0, "--jobs {jobs}: {}", run.stderr);
        // Four for the tables, one for what runs after them.
        assert_eq!(num(&run.json, "database.connections"), connections);
    }
    let source = table_checksums(src);
    assert!(source.len() >= 9, "{source:?}");
    assert_eq!(table_checksums(&one), source);
    assert_eq!(table_checksums(&four), source);
    assert_eq!(row_counts(&four), row_counts(src));
    let objects = schema_objects(&four);
    assert_eq!(objects, schema_objects(&one));
    assert!(
        objects.iter().any(|o| o[1] == "kcb_trigger") && objects.iter().any(|o| o[1] == "kcb_proc"),
        "{objects:?}"
    );
    let n = common::query_one(&format!("SELECT n FROM `{four}`.`kcb_view`"));
    assert_eq!(
        n,
        common::query_one(&format!("SELECT COUNT(*) FROM `{src}`.`hierarchy`"))
    );
    common::verify::database(&four, &env.store.expected, Layout::Database);
}

#[test]
fn a_table_that_fails_to_load_is_named_and_the_other_connections_stop() {
    let (env, set) = backed_up(Layout::FilesV1 { l1: 10, l2: 20 });
    support::tamper::edit_dump_chunked(&env.set_dir(&set), 64 * 1024, |sql| {
        // At a line start: the generator hides look-alikes inside strings.
        sql.replacen(
            "\nINSERT INTO `singleinstances` VALUES",
            "\nINSERT INTO `no_such_table` VALUES (1);\nINSERT INTO `singleinstances` VALUES",
            1,
        )
    });
    let db = common::unique_db("failing");
    let run = restore(&env, &set, &["--to-database", &db, "--jobs", "3"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("loading table `singleinstances` into")
            && run.stderr.contains("no_such_table")
            && run.stderr.contains("partial load"),
        "{}",
        run.stderr
    );
    // One stream: the dump as a whole is what failed, as before.
    let db = common::unique_db("failing");
    let run = restore(&env, &set, &["--to-database", &db, "--jobs", "1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("loading the dump into") && run.stderr.contains("no_such_table"),
        "{}",
        run.stderr
    );
}
