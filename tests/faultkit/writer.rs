//! A live writer: test code that behaves like a busy Kopano server (files_v1
//! layout) on a generated store while backups run. It delivers messages
//! with an attachment (the file first, then the SQL commit), shares
//! instances (a second reference to live data), soft-deletes messages and
//! purges soft-deleted ones (the reference deleted in a transaction, the
//! file unlinked when it was the last one, then the commit), as
//! ../shared/kopano-facts.md sections 3-4 describe. Every purge is logged
//! with the time of its unlink and of its commit, so a test can tell a
//! missing instance the writer purged from one that was lost.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kcbackup::generator::{GeneratedStore, TAG_ATTACH_DATA};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FLAG_DELETED: u16 = 0x400;

/// One purge whose unlink took an instance's data away.
#[derive(Debug, Clone)]
pub struct Purge {
    pub instance: u32,
    pub unlinked: DateTime<Utc>,
    pub committed: DateTime<Utc>,
}

/// What the writer did, shared with the test while it runs.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub delivered: u32,
    pub shared: u32,
    pub soft_deleted: u32,
    pub purged_refs: u32,
    pub purges: Vec<Purge>,
}

impl Log {
    /// Instances whose file was unlinked within `from..=to`.
    pub fn unlinked_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<u32> {
        self.purges
            .iter()
            .filter(|p| p.unlinked >= from && p.unlinked <= to)
            .map(|p| p.instance)
            .collect()
    }

    /// A purge of `instance` unlinked before `snapshot` and committed after
    /// `started` (the backup's start, before the dump's transaction): the
    /// file went between the transaction and the snapshot, the window
    /// Kopano's unlink-before-commit order leaves to any snapshot.
    pub fn in_window(
        &self,
        instance: u32,
        started: DateTime<Utc>,
        snapshot: DateTime<Utc>,
    ) -> bool {
        self.purges
            .iter()
            .any(|p| p.instance == instance && p.unlinked <= snapshot && p.committed >= started)
    }
}

pub struct LiveWriter {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    handle: Option<JoinHandle<()>>,
}

struct Msg {
    hid: u32,
    att: u32,
    instance: u32,
    deleted: bool,
}

struct Sql {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    acks: u64,
}

impl Sql {
    fn open(socket: &Path, db: &str) -> Sql {
        let mut child = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--user=root",
                "--batch",
                "--skip-column-names",
            ])
            .arg("--unbuffered")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--database={db}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the writer's mariadb client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Sql {
            child,
            stdin,
            stdout,
            acks: 0,
        }
    }

    /// Runs `sql` and waits until the server has executed it.
    fn exec(&mut self, sql: &str) {
        self.acks += 1;
        let ack = format!("ack{}", self.acks);
        writeln!(self.stdin, "{sql}\nSELECT '{ack}';").expect("writing to the client");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("reading the client");
            assert!(n > 0, "the writer's client ended (SQL error?) after: {sql}");
            if line.trim() == ack {
                return;
            }
        }
    }

    fn query(&mut self, sql: &str) -> String {
        self.acks += 1;
        let ack = format!("ack{}", self.acks);
        writeln!(self.stdin, "{sql}\nSELECT '{ack}';").expect("writing to the client");
        let mut out = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("reading the client");
            assert!(n > 0, "the writer's client ended after: {sql}");
            if line.trim() == ack {
                return out;
            }
            out.push_str(&line);
        }
    }
}

impl Drop for Sql {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

impl LiveWriter {
    /// Starts writing to `store` (files_v1, 10/20) with `seed`.
    pub fn start(store: &GeneratedStore, socket: &Path, seed: u64) -> LiveWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let att = store.attachment_path.clone();
        let db = store.database.clone();
        let socket = socket.to_path_buf();
        let (s, l) = (stop.clone(), log.clone());
        let handle = std::thread::Builder::new()
            .name("live-writer".into())
            .spawn(move || run(&att, &socket, &db, seed, &s, &l))
            .expect("starting the writer");
        LiveWriter {
            stop,
            log,
            handle: Some(handle),
        }
    }

    pub fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    /// Stops the writer; a panic in it fails the test here.
    pub fn stop(mut self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take()
            && let Err(e) = h.join()
        {
            std::panic::resume_unwind(e);
        }
        self.log()
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn v1_rel(id: u32) -> PathBuf {
    PathBuf::from(format!("{}/{}/{id}", id % 10, (id / 10) % 20))
}

fn run(att: &Path, socket: &Path, db: &str, seed: u64, stop: &AtomicBool, log: &Mutex<Log>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sql = Sql::open(socket, db);
    let start = sql.query(
        "SELECT IFNULL(MAX(id),0)+1000 FROM hierarchy; \
         SELECT IFNULL(MAX(instanceid),0)+1000 FROM singleinstances; \
         SELECT id, owner FROM hierarchy WHERE type = 3 ORDER BY id LIMIT 1;",
    );
    let nums: Vec<u32> = start
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    let (mut next_hid, mut next_inst, folder, owner) = (nums[0], nums[1], nums[2], nums[3]);
    let mut msgs: Vec<Msg> = Vec::new();
    // Live references per instance (the writer's own instances only).
    let mut refs: BTreeMap<u32, u32> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let op = rng.random_range(0..100);
        let live: Vec<usize> = (0..msgs.len()).filter(|i| !msgs[*i].deleted).collect();
        let deleted: Vec<usize> = (0..msgs.len()).filter(|i| msgs[*i].deleted).collect();
        if op < 55 || msgs.is_empty() {
            // Deliver: the file first, then the commit that references it.
            let id = next_inst;
            next_inst += 1;
            let size = rng.random_range(1..12_000);
            let mut data = vec![0u8; size];
            rng.fill_bytes(&mut data);
            let path = att.join(v1_rel(id));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &data).unwrap();
            let (m, a) = (next_hid, next_hid + 1);
            next_hid += 2;
            sql.exec(&deliver_sql(m, a, folder, owner, id));
            msgs.push(Msg {
                hid: m,
                att: a,
                instance: id,
                deleted: false,
            });
            *refs.entry(id).or_default() += 1;
            log.lock().unwrap().delivered += 1;
        } else if op < 75 && !live.is_empty() {
            // Share: another message referencing live data.
            let src = &msgs[live[rng.random_range(0..live.len())]];
            let id = src.instance;
            let (m, a) = (next_hid, next_hid + 1);
            next_hid += 2;
            sql.exec(&deliver_sql(m, a, folder, owner, id));
            msgs.push(Msg {
                hid: m,
                att: a,
                instance: id,
                deleted: false,
            });
            *refs.entry(id).or_default() += 1;
            log.lock().unwrap().shared += 1;
        } else if op < 94 && !live.is_empty() {
            // Soft delete: flagged, data stays until the purge.
            let i = live[rng.random_range(0..live.len())];
            msgs[i].deleted = true;
            sql.exec(&format!(
                "UPDATE hierarchy SET flags = flags | {FLAG_DELETED} WHERE id IN ({}, {});",
                msgs[i].hid, msgs[i].att
            ));
            log.lock().unwrap().soft_deleted += 1;
        } else if !deleted.is_empty() {
            // Purge: the rows go in a transaction; the file (when this was
            // its last reference) is unlinked before the commit.
            let i = deleted[rng.random_range(0..deleted.len())];
            let msg = msgs.swap_remove(i);
            sql.exec(&format!(
                "BEGIN; DELETE FROM singleinstances WHERE hierarchyid = {a}; \
                 DELETE FROM properties WHERE hierarchyid IN ({m}, {a}); \
                 DELETE FROM hierarchy WHERE id IN ({m}, {a});",
                m = msg.hid,
                a = msg.att
            ));
            let left = refs.get_mut(&msg.instance).unwrap();
            *left -= 1;
            let unlinked = if *left == 0 {
                refs.remove(&msg.instance);
                fs::remove_file(att.join(v1_rel(msg.instance))).unwrap();
                Some(Utc::now())
            } else {
                None
            };
            sql.exec("COMMIT;");
            let committed = Utc::now();
            let mut l = log.lock().unwrap();
            l.purged_refs += 1;
            if let Some(unlinked) = unlinked {
                l.purges.push(Purge {
                    instance: msg.instance,
                    unlinked,
                    committed,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..20)));
    }
}

fn deliver_sql(m: u32, a: u32, folder: u32, owner: u32, id: u32) -> String {
    format!(
        "BEGIN; INSERT INTO hierarchy (id, parent, type, flags, owner) VALUES \
         ({m}, {folder}, 5, 0, {owner}), ({a}, {m}, 7, 0, {owner}); \
         INSERT INTO properties (hierarchyid, tag, type, val_string) VALUES \
         ({m}, 55, 31, 'live ''writer'' {m}'); \
         INSERT INTO singleinstances (instanceid, hierarchyid, tag, filename) VALUES \
         ({id}, {a}, {TAG_ATTACH_DATA}, NULL); COMMIT;"
    )
}
