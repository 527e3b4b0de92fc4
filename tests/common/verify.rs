//! Checks that a database and an attachment tree hold exactly what a
//! generated store's `Expected` says. Used on the generated store itself and
//! on restored copies (another database name, another tree path).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use kcbackup::dump::scanner::{KopanoVersion, LobInstance, SingleInstanceRow};
use kcbackup::generator::Expected;
use kcbackup::layout::Layout;
use sha2::{Digest, Sha256};

use super::{query, query_one};

/// Database `db` has the expected row counts, `singleinstances` rows,
/// settings, greatest version and `lob` chunks (and, for the `database`
/// layout, the expected data per instance).
pub fn database(db: &str, e: &Expected, layout: Layout) {
    for (table, n) in &e.row_counts {
        let got: u64 = query_one(&format!("SELECT COUNT(*) FROM `{db}`.`{table}`"))
            .parse()
            .unwrap();
        assert_eq!(got, *n, "row count of {table}");
    }
    assert_eq!(singleinstances(db), e.singleinstances);
    let ids: BTreeSet<u32> = e.singleinstances.iter().map(|r| r.instanceid).collect();
    assert_eq!(ids, e.referenced);
    assert_eq!(e.instances.keys().copied().collect::<BTreeSet<_>>(), ids);

    let setting = |name: &str| {
        query_one(&format!(
            "SELECT LOWER(HEX(value)) FROM `{db}`.settings WHERE name = '{name}'"
        ))
    };
    assert_eq!(
        hex::decode(setting("attachment_storage")).unwrap(),
        e.attachment_storage.as_bytes()
    );
    assert_eq!(setting("server_guid"), e.server_guid);
    assert_eq!(greatest_version(db), e.kopano_version);
    assert_eq!(lob(db), e.lob);
    if layout == Layout::Database {
        let hashes = query(&format!(
            "SET SESSION group_concat_max_len = 1073741824; \
             SELECT instanceid, SHA2(GROUP_CONCAT(val_binary ORDER BY chunkid SEPARATOR ''), 256) \
             FROM `{db}`.lob GROUP BY instanceid"
        ));
        assert_eq!(hashes.len(), e.instances.len());
        for h in hashes {
            let id: u32 = h[0].parse().unwrap();
            assert_eq!(e.instances[&id].sha256, h[1], "lob data of instance {id}");
        }
    }
}

/// All `singleinstances` rows of `db`, sorted.
pub fn singleinstances(db: &str) -> Vec<SingleInstanceRow> {
    query(&format!(
        "SELECT instanceid, hierarchyid, tag, IFNULL(filename, '<NULL>') \
         FROM `{db}`.singleinstances ORDER BY 1, 2, 3"
    ))
    .into_iter()
    .map(|r| SingleInstanceRow {
        instanceid: r[0].parse().unwrap(),
        hierarchyid: r[1].parse().unwrap(),
        tag: r[2].parse().unwrap(),
        filename: (r[3] != "<NULL>").then(|| r[3].clone()),
    })
    .collect()
}

/// The greatest `versions` row of `db`.
pub fn greatest_version(db: &str) -> KopanoVersion {
    let v: Vec<u32> = query(&format!(
        "SELECT major, minor, micro, revision, databaserevision FROM `{db}`.versions \
         ORDER BY 1 DESC, 2 DESC, 3 DESC, 4 DESC, 5 DESC LIMIT 1"
    ))[0]
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    KopanoVersion {
        major: v[0],
        minor: v[1],
        micro: v[2],
        revision: v[3],
        databaserevision: v[4],
    }
}

/// The `lob` chunk summary of `db`, as the dump scanner reports it.
pub fn lob(db: &str) -> Vec<LobInstance> {
    query(&format!(
        "SELECT instanceid, tag, COUNT(*), SUM(LENGTH(val_binary)), MIN(chunkid), MAX(chunkid) \
         FROM `{db}`.lob GROUP BY instanceid, tag ORDER BY 1, 2"
    ))
    .into_iter()
    .map(|r| {
        let chunks: u32 = r[2].parse().unwrap();
        let (lo, hi): (u32, u32) = (r[4].parse().unwrap(), r[5].parse().unwrap());
        LobInstance {
            instanceid: r[0].parse().unwrap(),
            tag: r[1].parse().unwrap(),
            chunks,
            bytes: r[3].parse().unwrap(),
            gap_free: lo == 0 && hi + 1 == chunks,
        }
    })
    .collect()
}

/// Every file under `root`, relative to it.
pub fn list_files(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The uncompressed data of a data file (`.gz`: all gzip members).
pub fn read_data(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|x| x == "gz") {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        raw
    }
}

/// Every referenced instance has its data at its layout path under `att`,
/// with the expected size and hash (files_v2: and its holder file).
pub fn instances(att: &Path, e: &Expected, layout: Layout) {
    let guid = hex::decode(&e.server_guid).unwrap();
    for (id, info) in &e.instances {
        match layout {
            Layout::FilesV1 { l1, l2 } => {
                let rel = info.path.clone().unwrap();
                let candidates = Layout::v1_candidates(l1, l2, *id);
                assert!(
                    candidates.contains(&rel),
                    "{} not at its layout path",
                    rel.display()
                );
                let present = candidates.iter().filter(|c| att.join(c).exists()).count();
                assert_eq!(present, 1, "instance {id}: exactly one of plain/.gz");
            }
            Layout::FilesV2 => {
                let rel = info.path.clone().unwrap();
                let dir = rel.parent().unwrap();
                let hex_name = dir.to_str().unwrap().replace('/', "");
                assert_eq!(hex_name, info.sha256, "content hash = directory name");
                let holder = dir.join("holder").join(Layout::v2_holder_name(&guid, *id));
                assert!(att.join(&holder).is_file(), "{}", holder.display());
            }
            Layout::Database | Layout::S3 => assert_eq!(info.path, None),
        }
        if let Some(rel) = &info.path {
            let data = read_data(&att.join(rel));
            assert_eq!(data.len() as u64, info.size, "size of {}", rel.display());
            assert_eq!(hex::encode(Sha256::digest(&data)), info.sha256);
        }
    }
    if layout == Layout::FilesV2 {
        for r in &e.singleinstances {
            let content = e.instances[&r.instanceid].path.clone().unwrap();
            assert_eq!(r.filename.as_deref(), content.parent().unwrap().to_str());
        }
    }
}

/// The tree under `att` is exactly the generated one: the same files (data,
/// holders, extras, leftovers) and every instance intact.
pub fn tree(att: &Path, e: &Expected, layout: Layout) {
    let mut listed = BTreeSet::new();
    for f in e
        .data_files
        .iter()
        .chain(&e.holder_files)
        .chain(&e.extra_files)
        .chain(&e.leftover_files)
    {
        assert!(listed.insert(f.clone()), "{} listed twice", f.display());
    }
    assert_eq!(
        list_files(att),
        listed,
        "files in the tree vs. expected lists"
    );
    instances(att, e, layout);
}
