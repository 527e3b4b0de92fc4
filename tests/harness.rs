//! Tests of the test harness itself: the sandbox server, its cleanup, and
//! generated stores matching their `Expected` record exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_defaults, new_store, query_one, server, unique_db, verify};
use flate2::read::GzDecoder;
use kcbackup::generator::{
    self, DB_PASSWORD, GeneratedStore, NASTY_BODY, TAG_ATTACH_DATA, TAG_IMAP_COPY,
};
use kcbackup::layout::Layout;
use kcbackup::sandbox::{Sandbox, SandboxOptions, process_alive};

const V1_DEFAULT: Layout = Layout::FilesV1 { l1: 10, l2: 20 };
const V1_ODD: Layout = Layout::FilesV1 { l1: 7, l2: 5 };

/// What the generator promises beyond the layout rules: every special
/// case a backup must survive is present.
fn check_features(store: &GeneratedStore) {
    let db = &store.database;
    let e = &store.expected;
    // The nasty text survived loading byte for byte; non-ASCII too.
    let n = query_one(&format!(
        "SELECT COUNT(*) FROM `{db}`.properties WHERE tag = 4096 \
         AND INSTR(val_string, CONVERT(0x{} USING utf8mb4)) > 0",
        hex::encode(NASTY_BODY)
    ));
    assert_eq!(n, "1");
    let n = query_one(&format!(
        "SELECT COUNT(*) FROM `{db}`.properties WHERE val_string LIKE '%漢字%'"
    ));
    assert_ne!(n, "0");
    let deleted = query_one(&format!(
        "SELECT COUNT(*) FROM `{db}`.hierarchy WHERE type IN (5, 7) AND flags & 1024"
    ));
    assert_ne!(deleted, "0");
    let mut per_instance: BTreeMap<u32, u32> = BTreeMap::new();
    for r in &e.singleinstances {
        *per_instance.entry(r.instanceid).or_default() += 1;
    }
    assert!(
        per_instance.values().any(|&n| n >= 2),
        "single-instance sharing"
    );
    assert!(e.singleinstances.iter().any(|r| r.tag == TAG_IMAP_COPY));
    assert!(e.singleinstances.iter().any(|r| r.tag == TAG_ATTACH_DATA));

    let att = &store.attachment_path;
    match store.spec.layout {
        Layout::FilesV1 { l1, l2 } => {
            let mut multi_member = 0;
            for (id, info) in &e.instances {
                let [plain, gz] = Layout::v1_candidates(l1, l2, *id);
                let rel = info.path.clone().unwrap();
                if info.size <= 4096 {
                    assert_eq!(rel, plain, "small data is never compressed");
                }
                if rel == gz {
                    let raw = std::fs::read(att.join(&rel)).unwrap();
                    let mut first = Vec::new();
                    GzDecoder::new(&raw[..]).read_to_end(&mut first).unwrap();
                    if (first.len() as u64) < info.size {
                        multi_member += 1;
                    }
                }
            }
            assert!(multi_member >= 2, "multi-member gzip files: {multi_member}");
            let gz = e
                .data_files
                .iter()
                .filter(|p| p.extension().is_some_and(|x| x == "gz"));
            assert!(gz.count() * 10 > e.data_files.len(), "plenty of .gz files");
            let plain_big = e
                .instances
                .values()
                .any(|i| i.size > 4096 && i.path.as_ref().unwrap().extension().is_none());
            assert!(plain_big, "uncompressed big files too");
            let top = std::fs::read_dir(att).unwrap().count() as u32;
            assert_eq!(
                top,
                l1 + u32::from(store.spec.leftovers),
                "L1 dirs + testfile"
            );
            assert!(att.join(format!("{}/{}", l1 - 1, l2 - 1)).is_dir());
        }
        Layout::FilesV2 => {
            // Two instances with the same content: one directory, two holders.
            let mut holders: BTreeMap<PathBuf, u32> = BTreeMap::new();
            for h in &e.holder_files {
                *holders
                    .entry(h.parent().unwrap().to_path_buf())
                    .or_default() += 1;
            }
            assert!(holders.values().any(|&n| n >= 2));
        }
        _ => {
            assert!(e.data_files.is_empty());
            assert!(e.lob.iter().any(|l| l.chunks >= 3), "multi-chunk instances");
        }
    }
}

fn check_store(store: &GeneratedStore) {
    verify::database(&store.database, &store.expected, store.spec.layout);
    verify::tree(&store.attachment_path, &store.expected, store.spec.layout);
}

fn check_layout(layout: Layout) {
    let started = Instant::now();
    let (_dir, store) = new_store(layout, |_| {});
    eprintln!("{layout}: generated in {:?}", started.elapsed());
    assert_eq!(store.expected.attachment_storage, layout.to_string());
    assert!(store.expected.instances.len() > 200);
    if layout != Layout::Database {
        assert!(!store.expected.extra_files.is_empty());
    }
    assert!(
        store
            .expected
            .leftover_files
            .contains(&PathBuf::from("testfile"))
    );
    check_store(&store);
    check_features(&store);
}

#[test]
fn files_v1_default_store_matches_expected() {
    check_layout(V1_DEFAULT);
}

#[test]
fn files_v1_7_5_store_matches_expected() {
    check_layout(V1_ODD);
}

#[test]
fn files_v2_store_matches_expected() {
    check_layout(Layout::FilesV2);
}

#[test]
fn database_store_matches_expected() {
    check_layout(Layout::Database);
}

#[test]
fn added_attachments_update_expected() {
    for layout in [V1_DEFAULT, Layout::FilesV2, Layout::Database] {
        let (_dir, mut store) = new_store(layout, |s| {
            s.users = 2;
            s.messages_per_user = 6;
        });
        let before = store.expected.clone();
        generator::add_attachments(server(), &mut store, 5, 99).unwrap();
        let e = &store.expected;
        assert_eq!(e.referenced.len(), before.referenced.len() + 5);
        assert_eq!(
            e.row_counts["singleinstances"],
            before.row_counts["singleinstances"] + 5
        );
        assert_eq!(
            e.row_counts["hierarchy"],
            before.row_counts["hierarchy"] + 10
        );
        let new_min = e
            .referenced
            .iter()
            .copied()
            .find(|id| !before.referenced.contains(id));
        assert!(new_min.unwrap() > *before.referenced.last().unwrap());
        check_store(&store);
        // A second batch continues after the first.
        generator::add_attachments(server(), &mut store, 2, 100).unwrap();
        check_store(&store);
    }
}

#[test]
fn generation_is_deterministic() {
    let tweak = |s: &mut generator::StoreSpec| {
        s.users = 3;
        s.messages_per_user = 5;
    };
    let (_a, a) = new_store(Layout::FilesV2, tweak);
    let (_b, b) = new_store(Layout::FilesV2, tweak);
    assert_ne!(a.database, b.database);
    assert_eq!(a.expected, b.expected);
    let (_c, c) = new_store(Layout::FilesV2, |s| {
        tweak(s);
        s.seed = 7;
    });
    assert_ne!(a.expected.server_guid, c.expected.server_guid);
}

#[test]
fn kopano_user_logs_in_with_the_nasty_password() {
    let (dir, store) = new_store(V1_ODD, |s| {
        s.users = 2;
        s.messages_per_user = 3;
    });
    // The include file holds the password verbatim (CRLF line end).
    let db_cfg = std::fs::read_to_string(store.config_dir.join("server.d/db.cfg")).unwrap();
    assert!(db_cfg.contains(&format!("mysql_password = {DB_PASSWORD}\r\n")));
    assert!(
        std::fs::read_to_string(&store.server_cfg)
            .unwrap()
            .contains("!include server.d/db.cfg")
    );

    let target = store.kopano_target();
    let defaults = client_defaults(dir.path(), &target);
    let out = Command::new("mariadb")
        .arg(format!("--defaults-file={}", defaults.display()))
        .args(["--batch", "--skip-column-names", &store.database, "-e"])
        .arg("SELECT CURRENT_USER(); SELECT COUNT(*) FROM hierarchy;")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "kopano@localhost");
    assert_eq!(lines[1], store.expected.row_counts["hierarchy"].to_string());

    // The grants suffice for the dump the backup takes.
    let out = Command::new("mariadb-dump")
        .arg(format!("--defaults-file={}", defaults.display()))
        .args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
        ])
        .arg(&store.database)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("-- Dump completed"));

    // And the check is real: a wrong password is refused.
    let mut wrong = target.clone();
    wrong.password = kcbackup::settings::Secret::new(DB_PASSWORD.replace('\\', ""));
    let bad = client_defaults(dir.path(), &wrong);
    let status = Command::new("mariadb")
        .arg(format!("--defaults-file={}", bad.display()))
        .args(["-e", "SELECT 1"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn parallel_stores_get_separate_databases() {
    let handles: Vec<_> = [V1_DEFAULT, Layout::FilesV2, Layout::Database]
        .into_iter()
        .enumerate()
        .map(|(i, layout)| {
            std::thread::spawn(move || {
                new_store(layout, |s| {
                    s.users = 2;
                    s.messages_per_user = 4;
                    s.seed = 1000 + i as u64;
                })
            })
        })
        .collect();
    let stores: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let names: BTreeSet<_> = stores.iter().map(|(_, s)| s.database.clone()).collect();
    assert_eq!(names.len(), 3);
    for (_, s) in &stores {
        let guid = query_one(&format!(
            "SELECT LOWER(HEX(value)) FROM `{}`.settings WHERE name = 'server_guid'",
            s.database
        ));
        assert_eq!(guid, s.expected.server_guid);
        let storage = query_one(&format!(
            "SELECT value FROM `{}`.settings WHERE name = 'attachment_storage'",
            s.database
        ));
        assert_eq!(storage, s.spec.layout.to_string());
    }
}

#[test]
fn sql_errors_carry_the_client_message_and_load_streams() {
    let err = server().sql("SELEC 1").unwrap_err();
    assert!(format!("{err:#}").contains("SQL syntax"), "{err:#}");
    let db = unique_db("load");
    server().sql(&format!("CREATE DATABASE `{db}`")).unwrap();
    let mut sql = "CREATE TABLE t (a int, b longtext);\n".to_string();
    for i in 0..1000 {
        sql.push_str(&format!("INSERT INTO t VALUES ({i}, 'x\\'y;\\n-- z');\n"));
    }
    server().load(Some(&db), &mut sql.as_bytes()).unwrap();
    assert_eq!(query_one(&format!("SELECT COUNT(*) FROM `{db}`.t")), "1000");
    let err = server().load(Some(&db), &mut "INSERT INTO nope VALUES (1);".as_bytes());
    assert!(format!("{:#}", err.unwrap_err()).contains("doesn't exist"));
}

#[test]
fn tool_config_points_at_the_store() {
    let (dir, store) = new_store(Layout::FilesV2, |s| {
        s.users = 1;
        s.messages_per_user = 2;
    });
    let repo = dir.path().join("repo \"x\"");
    let path = common::write_tool_config(dir.path(), &store, &repo);
    let value: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    assert_eq!(
        value["kopano"]["server_cfg"].as_str().unwrap(),
        store.server_cfg.to_str().unwrap()
    );
    assert_eq!(
        value["repository"]["path"].as_str().unwrap(),
        repo.to_str().unwrap()
    );
    assert_eq!(value["snapshot"]["method"].as_str().unwrap(), "none");
    // The binary exists and runs.
    let _ = common::kcbackup(&["--help"]);
}

#[test]
fn load_with_never_runs_a_half_written_statement() {
    let db = unique_db("half");
    server()
        .sql(&format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (a int)"
        ))
        .unwrap();
    let err = server()
        .load_with::<()>(Some(&db), |w| {
            w.write_all(b"INSERT INTO t VALUES (1),(2")?;
            anyhow::bail!("generator failed")
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("generator failed"), "{err:#}");
    assert_eq!(query_one(&format!("SELECT COUNT(*) FROM `{db}`.t")), "0");
}

#[test]
fn too_long_socket_path_is_refused_up_front() {
    let scratch = tempfile::tempdir().unwrap();
    let deep = scratch.path().join("d".repeat(100));
    std::fs::create_dir(&deep).unwrap();
    let err = Sandbox::start(&SandboxOptions {
        parent_dir: Some(deep.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("longer than"), "{err:#}");
    assert_eq!(
        std::fs::read_dir(&deep).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn stop_shuts_down_and_removes_the_directory() {
    let started = Instant::now();
    let sandbox = Sandbox::start(&SandboxOptions::default()).unwrap();
    eprintln!("sandbox started in {:?}", started.elapsed());
    assert_eq!(sandbox.sql("SELECT 1 + 1").unwrap(), "2\n");
    let (pid, dir) = (sandbox.mariadbd_pid(), sandbox.dir().to_path_buf());
    assert!(sandbox.socket().starts_with(&dir));
    let stopping = Instant::now();
    sandbox.stop().unwrap();
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(!process_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn binlog_sandbox_serves_master_data_dumps_and_keeps_its_dir() {
    let sandbox = Sandbox::start(&SandboxOptions {
        binlog: true,
        keep: true,
        ..Default::default()
    })
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut spec = generator::StoreSpec::small(Layout::Database, "kopano");
    spec.users = 1;
    spec.messages_per_user = 3;
    let store = generator::generate(&sandbox, root.path(), &spec).unwrap();
    let defaults = client_defaults(root.path(), &store.kopano_target());
    let out = Command::new("mariadb-dump")
        .arg(format!("--defaults-file={}", defaults.display()))
        .args(["--single-transaction", "--master-data=2", "kopano"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHANGE MASTER TO"));
    let (pid, dir) = (sandbox.mariadbd_pid(), sandbox.dir().to_path_buf());
    sandbox.stop().unwrap();
    assert!(!process_alive(pid));
    assert!(
        dir.join("binlog.000001").exists(),
        "keep leaves the directory"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

const WATCHDOG_ENV: &str = "KCBACKUP_WATCHDOG_REPORT";

/// Helper process for `watchdog_cleans_up_after_sigkill`; a no-op otherwise.
#[test]
fn watchdog_child() {
    let Some(report) = std::env::var_os(WATCHDOG_ENV) else {
        return;
    };
    let sandbox = Sandbox::start(&SandboxOptions::default()).unwrap();
    let line = format!("{} {}\n", sandbox.mariadbd_pid(), sandbox.dir().display());
    let tmp = PathBuf::from(format!("{}.tmp", report.to_string_lossy()));
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .unwrap();
    std::fs::rename(tmp, &report).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn watchdog_cleans_up_after_sigkill() {
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["watchdog_child", "--exact", "--test-threads=1"])
        .env(WATCHDOG_ENV, &report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !report.exists() {
        assert!(Instant::now() < deadline, "child never started its sandbox");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&report).unwrap();
    let (pid, dir) = text.trim().split_once(' ').unwrap();
    let (pid, dir): (u32, PathBuf) = (pid.parse().unwrap(), dir.into());
    assert!(process_alive(pid) && dir.exists());

    child.kill().unwrap(); // SIGKILL: no destructor, no atexit
    child.wait().unwrap();
    let killed = Instant::now();
    while process_alive(pid) || dir.exists() {
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "mariadbd {pid} alive: {}, {} exists: {}",
            process_alive(pid),
            dir.display(),
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("watchdog cleaned up {:?} after SIGKILL", killed.elapsed());
}

#[test]
fn sized_spec_scales_with_the_requested_volume() {
    let spec = generator::StoreSpec::sized(Layout::Database, "x", 1 << 30);
    let messages = u64::from(spec.users * spec.messages_per_user);
    let approx = messages * spec.attachment_bytes * 3 / 2;
    assert!(approx > 900 << 20 && approx < 1100 << 20, "{approx}");
    assert_eq!(spec.lob_chunk, 384 * 1024);
}

/// The drill's server is set up for one big load: no log flush at commit,
/// no doublewrite buffer, no binary log, a buffer pool sized to the
/// machine within 128 MiB..1 GiB.
#[test]
fn a_sandbox_tuned_for_load_trades_durability_for_speed() {
    let sandbox = Sandbox::start(&SandboxOptions {
        tuned_for_load: true,
        ..Default::default()
    })
    .unwrap();
    let got = sandbox
        .sql(
            "SELECT @@innodb_flush_log_at_trx_commit, @@innodb_doublewrite, @@log_bin, \
             @@innodb_buffer_pool_size",
        )
        .unwrap();
    let pool = kcbackup::sandbox::load_buffer_pool();
    assert!((128 << 20..=1 << 30).contains(&pool), "{pool}");
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0", pool.to_string().as_str()],
        "{got}"
    );
    sandbox.stop().unwrap();
}
