//! Generated Kopano-like stores (database + attachment tree + /etc/kopano)
//! in a [`Sandbox`], with an [`Expected`] record of what a correct backup of
//! them must contain. Deterministic from a seed; streams, so size is no limit.

mod builder;
mod config;
mod content;
mod files;
pub mod nightly;
mod sql;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::{Rng as _, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dump::scanner::{KopanoVersion, LobInstance, SingleInstanceRow};
use crate::layout::Layout;
use crate::sandbox::Sandbox;
use crate::settings::{MysqlTarget, Secret};
use builder::Builder;
use sql::quote;

pub use content::NASTY_BODY;
pub use sql::TABLES;

/// The database user a generated store's server.cfg names.
pub const DB_USER: &str = "kopano";
/// Its password: `#`, spaces, both quotes, backslashes, `=` and `;`.
pub const DB_PASSWORD: &str = r#"p#ss w"o'rd\x\\y=z;"#;
/// `singleinstances.tag` of attachment data (PR_ATTACH_DATA_BIN).
pub const TAG_ATTACH_DATA: u16 = 14081;
/// `singleinstances.tag` of the RFC 5322 copy kept for IMAP users.
pub const TAG_IMAP_COPY: u16 = 26508;

/// What to generate.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub layout: Layout,
    pub users: u32,
    pub messages_per_user: u32,
    /// Each message gets 0..=this many attachments (the first two get more).
    pub max_attachments_per_message: u32,
    pub seed: u64,
    /// Average size of attachment data in bytes.
    pub attachment_bytes: u64,
    /// `lob` chunk size (Kopano: 384 KiB); smaller makes multi-chunk data cheap.
    pub lob_chunk: usize,
    /// Message text per message, in bytes.
    pub body_bytes: usize,
    /// Keep RFC 5322 copies (tag 26508) of about 30% of the messages.
    pub imap_copies: bool,
    /// Data files no reference points to (file layouts only).
    pub extras: u32,
    /// `<id>.deleted`, `<id>.gz.deleted` (files_v1) and a top-level `testfile`.
    pub leftovers: bool,
    pub database: String,
    /// `attachment_storage` written to server.cfg; `None` = the layout's name.
    pub config_attachment_storage: Option<String>,
    /// For [`Layout::S3`]: the bucket the objects go to, through kcbackup's
    /// own S3 client, at `attachment_path/<id>` as Kopano writes them.
    pub s3: Option<S3Target>,
}

/// A bucket for a generated `s3` store.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub config: crate::s3::S3Config,
    pub bucket: String,
}

impl StoreSpec {
    /// A store that generates in well under a second: 10 users x 20
    /// messages, a few hundred attachments of ~6 KB, 8 KiB lob chunks.
    pub fn small(layout: Layout, database: impl Into<String>) -> StoreSpec {
        StoreSpec {
            layout,
            users: 10,
            messages_per_user: 20,
            max_attachments_per_message: 3,
            seed: 42,
            attachment_bytes: 6000,
            lob_chunk: 8192,
            body_bytes: 600,
            imap_copies: true,
            extras: 3,
            leftovers: true,
            database: database.into(),
            config_attachment_storage: None,
            s3: None,
        }
    }
}

impl StoreSpec {
    /// A store with about `approx_bytes` of attachment data (demo, benchmark):
    /// 20 users, ~100 KB attachments, Kopano's real 384 KiB `lob` chunks.
    pub fn sized(layout: Layout, database: impl Into<String>, approx_bytes: u64) -> StoreSpec {
        let mut spec = StoreSpec::small(layout, database);
        spec.users = 20;
        spec.attachment_bytes = 100_000;
        spec.lob_chunk = 384 * 1024;
        spec.body_bytes = 4000;
        // Per message: 1.5 attachments on average, plus IMAP copies (small).
        let per_message = spec.attachment_bytes * 3 / 2;
        let per_user = approx_bytes / per_message / spec.users as u64;
        spec.messages_per_user = per_user.clamp(2, u32::MAX as u64) as u32;
        spec
    }
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec::small(Layout::FilesV1 { l1: 10, l2: 20 }, "kopano")
    }
}

/// One referenced attachment instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub tag: u16,
    /// Uncompressed size.
    pub size: u64,
    /// SHA-256 of the uncompressed data, lower hex.
    pub sha256: String,
    /// The data file relative to attachment_path (`None` for `database`).
    pub path: Option<PathBuf>,
}

/// What a correct backup of the store must find. File lists are relative to
/// `attachment_path` and sorted; every file in the tree is in exactly one of
/// `data_files`, `holder_files`, `extra_files`, `leftover_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Every table, with its number of rows (0 included).
    pub row_counts: BTreeMap<String, u64>,
    /// Sorted.
    pub singleinstances: Vec<SingleInstanceRow>,
    pub attachment_storage: String,
    pub kopano_version: KopanoVersion,
    /// Lower hex.
    pub server_guid: String,
    /// Distinct `singleinstances.instanceid`s.
    pub referenced: BTreeSet<u32>,
    /// `database` layout: every instance's chunks, sorted by instance id.
    pub lob: Vec<LobInstance>,
    /// Data files no reference points to (files_v2: the whole directory).
    pub extra_files: Vec<PathBuf>,
    /// `*.deleted`, `*.gz.deleted`, `testfile`.
    pub leftover_files: Vec<PathBuf>,
    /// Every referenced data file (`<id>`/`<id>.gz`, or files_v2 `content`).
    pub data_files: Vec<PathBuf>,
    /// files_v2: every referenced `holder/s<guid>i<id>` file.
    pub holder_files: Vec<PathBuf>,
    /// Per referenced instance: size, hash and file.
    pub instances: BTreeMap<u32, InstanceInfo>,
}

/// Where [`add_attachments`] continues.
#[derive(Debug, Clone)]
pub struct Cursor {
    next_hierarchy: u32,
    next_instance: u32,
    folder: u32,
    owner: u32,
}

/// A generated store on disk and in the sandbox.
#[derive(Debug, Clone)]
pub struct GeneratedStore {
    pub root: PathBuf,
    /// `root/etc/kopano/server.cfg`.
    pub server_cfg: PathBuf,
    /// `root/etc/kopano`.
    pub config_dir: PathBuf,
    /// `root/attachments`.
    pub attachment_path: PathBuf,
    pub database: String,
    pub db_user: String,
    pub db_password: String,
    /// The sandbox's socket, as written to server.cfg.
    pub socket: PathBuf,
    pub spec: StoreSpec,
    pub expected: Expected,
    pub cursor: Cursor,
}

impl GeneratedStore {
    /// The text of a kcbackup.toml that backs this store up into
    /// `repository` with the given `[snapshot] method`.
    pub fn tool_config(&self, repository: &Path, snapshot: &str) -> String {
        let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        format!(
            "[kopano]\nserver_cfg = {}\n\n[repository]\npath = {}\n\n[snapshot]\nmethod = {}\n",
            quoted(&self.server_cfg),
            quoted(repository),
            toml::Value::String(snapshot.into())
        )
    }

    /// [`Self::tool_config`] without a snapshot, written as `dir/kcbackup.toml`.
    pub fn write_tool_config(&self, dir: &Path, repository: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("kcbackup.toml");
        std::fs::write(&path, self.tool_config(repository, "none"))
            .with_context(|| format!("while writing {}", path.display()))?;
        Ok(path)
    }

    /// The `kopano` user's connection, as server.cfg describes it.
    pub fn kopano_target(&self) -> MysqlTarget {
        MysqlTarget {
            host: "localhost".into(),
            port: 3306,
            user: self.db_user.clone(),
            password: Secret::new(self.db_password.clone()),
            socket: Some(self.socket.clone()),
            database: self.database.clone(),
            dump_command: None,
            timeouts: Default::default(),
        }
    }
}

/// Generates a store under `root` (created if missing) and database
/// `spec.database` (must not exist) in `sandbox`.
pub fn generate(
    sandbox: &Sandbox,
    root: &Path,
    spec: &StoreSpec,
) -> anyhow::Result<GeneratedStore> {
    check_name(&spec.database)?;
    if (spec.layout == Layout::S3) != spec.s3.is_some() {
        bail!("a generated s3 store needs a bucket (StoreSpec.s3), and only an s3 store");
    }
    if spec.users == 0 {
        bail!("a generated store needs at least one user");
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let root = root.canonicalize()?;
    let attachment_path = root.join("attachments");
    std::fs::create_dir_all(&attachment_path)?;
    if let Layout::FilesV1 { l1, l2 } = spec.layout {
        files::create_v1_dirs(&attachment_path, l1, l2)?;
    }

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut guid = [0u8; 16];
    rng.fill_bytes(&mut guid);
    let versions = shuffled_versions(&mut rng);
    let mut expected = Expected {
        row_counts: BTreeMap::new(),
        singleinstances: Vec::new(),
        attachment_storage: spec.layout.to_string(),
        kopano_version: versions.iter().copied().max().context("no versions")?,
        server_guid: hex::encode(guid),
        referenced: BTreeSet::new(),
        lob: Vec::new(),
        extra_files: Vec::new(),
        leftover_files: Vec::new(),
        data_files: Vec::new(),
        holder_files: Vec::new(),
        instances: BTreeMap::new(),
    };
    create_database(sandbox, &spec.database)?;

    let (counts, cursor) = sandbox
        .load_with(Some(&spec.database), |w| {
            let mut b = Builder::new(spec, &attachment_path, &guid, rng, &mut expected, w);
            b.sql.raw("SET NAMES utf8mb4;\n")?;
            b.sql.raw(sql::SCHEMA)?;
            b.header_rows(&versions)?;
            let cursor = b.users()?;
            b.extras_and_leftovers()?;
            let cursor = Cursor {
                next_hierarchy: b.next_hid,
                next_instance: b.next_inst,
                ..cursor
            };
            Ok((b.sql.finish()?, cursor))
        })
        .with_context(|| format!("loading generated database {}", spec.database))?;
    for table in TABLES {
        let n = counts.get(*table).copied().unwrap_or(0);
        expected.row_counts.insert(table.to_string(), n);
    }
    tidy(&mut expected);

    let socket = sandbox.socket().to_path_buf();
    let config_dir = root.join("etc/kopano");
    let storage = spec
        .config_attachment_storage
        .clone()
        .unwrap_or_else(|| spec.layout.to_string());
    let server_cfg = config::write(&config_dir, spec, &socket, &storage, &attachment_path)?;
    Ok(GeneratedStore {
        root,
        server_cfg,
        config_dir,
        attachment_path,
        database: spec.database.clone(),
        db_user: DB_USER.into(),
        db_password: DB_PASSWORD.into(),
        socket,
        spec: spec.clone(),
        expected,
        cursor,
    })
}

/// Adds `n` new messages with one new attachment each (DB rows and files,
/// files first as Kopano does), updating `store.expected`.
pub fn add_attachments(
    sandbox: &Sandbox,
    store: &mut GeneratedStore,
    n: u32,
    seed: u64,
) -> anyhow::Result<()> {
    let guid = hex::decode(&store.expected.server_guid).context("server_guid")?;
    let rng = ChaCha8Rng::seed_from_u64(seed);
    let spec = store.spec.clone();
    let att = store.attachment_path.clone();
    let cursor = store.cursor.clone();
    let expected = &mut store.expected;
    let (counts, next) = sandbox.load_with(Some(&store.database), |w| {
        let mut b = Builder::new(&spec, &att, &guid, rng, expected, w);
        b.incremental = true;
        b.next_hid = cursor.next_hierarchy;
        b.next_inst = cursor.next_instance;
        b.sql.raw("SET NAMES utf8mb4;\n")?;
        for _ in 0..n {
            b.message(cursor.folder, cursor.owner, "incremental")?;
        }
        Ok((b.sql.finish()?, (b.next_hid, b.next_inst)))
    })?;
    for (table, n) in counts {
        *store.expected.row_counts.entry(table).or_default() += n;
    }
    store.cursor.next_hierarchy = next.0;
    store.cursor.next_instance = next.1;
    tidy(&mut store.expected);
    Ok(())
}

/// Database names are used unquoted in file names and quoted in SQL; keep them plain.
fn check_name(db: &str) -> anyhow::Result<()> {
    let ok = !db.is_empty()
        && db.len() <= 64
        && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("database name {db:?}: use 1-64 ASCII letters, digits and '_'");
    }
    Ok(())
}

fn create_database(sandbox: &Sandbox, db: &str) -> anyhow::Result<()> {
    let user = format!("{}@'localhost'", quote(DB_USER));
    // In GRANT, `_` in a database name is a wildcard.
    let grant_db = sql::ident(&db.replace('_', "\\_"));
    let has_show_routine = sandbox
        .sql("SHOW PRIVILEGES")?
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("show routine"));
    let mut global = "PROCESS, BINLOG MONITOR".to_string();
    if has_show_routine {
        global.push_str(", SHOW ROUTINE");
    }
    sandbox
        .sql(&format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;\n\
             CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {};\n\
             GRANT ALL PRIVILEGES ON {grant_db}.* TO {user};\n\
             GRANT {global} ON *.* TO {user};\n",
            sql::ident(db),
            quote(DB_PASSWORD)
        ))
        .with_context(|| format!("creating database {db} and user {DB_USER}"))?;
    Ok(())
}

/// Version history, shuffled so that the greatest row is not the last one
/// inserted; numbers chosen so that string order differs from numeric order.
fn shuffled_versions(rng: &mut ChaCha8Rng) -> Vec<KopanoVersion> {
    let v = |major, minor, micro, revision, databaserevision| KopanoVersion {
        major,
        minor,
        micro,
        revision,
        databaserevision,
    };
    let mut list = vec![
        v(8, 7, 8, 0, 63),
        v(8, 7, 25, 0, 68),
        v(9, 1, 0, 0, 111),
        v(10, 0, 6, 0, 118),
        v(11, 0, 2, 0, 125),
    ];
    for i in (1..list.len()).rev() {
        let j = rng.random_range(0..=i);
        list.swap(i, j);
    }
    let last = list.len() - 1;
    if list.iter().max() == list.last() {
        list.swap(0, last);
    }
    list
}

fn tidy(e: &mut Expected) {
    e.singleinstances.sort();
    e.lob.sort_by_key(|l| (l.instanceid, l.tag));
    for v in [
        &mut e.extra_files,
        &mut e.leftover_files,
        &mut e.data_files,
        &mut e.holder_files,
    ] {
        v.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greatest_version_is_never_inserted_last() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let v = shuffled_versions(&mut rng);
            assert_ne!(v.iter().max(), v.last());
            assert_eq!(v.len(), 5);
        }
    }

    #[test]
    fn database_names_stay_plain() {
        assert!(check_name("kc_1234_0").is_ok());
        for bad in ["", "a-b", "a`b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
