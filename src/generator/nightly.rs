//! A night of use on a generated store, for benchmarks and dedup tests: read
//! flags toggled and messages moved by UPDATEs in place scattered through
//! `properties` and `hierarchy`, messages deleted and purged with their data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::GeneratedStore;
use crate::layout::Layout;
use crate::sandbox::Sandbox;

/// PR_MESSAGE_FLAGS, a PT_LONG property of every message.
pub const PR_MESSAGE_FLAGS: u16 = 0x0E07;
/// The read bit of PR_MESSAGE_FLAGS.
pub const MSGFLAG_READ: u32 = 1;
const PT_LONG: u16 = 3;
const TYPE_FOLDER: u8 = 3;
const TYPE_MESSAGE: u8 = 5;
const TYPE_ATTACHMENT: u8 = 7;

/// How much of the store one night touches, in percent of its messages.
#[derive(Debug, Clone, Copy)]
pub struct Night {
    /// Messages whose read flag flips (`properties`, in place).
    pub read_percent: f64,
    /// Messages moved to another folder of their owner (`hierarchy.parent`).
    pub moved_percent: f64,
    /// New messages, one attachment each, appended.
    pub new_percent: f64,
    /// Messages deleted and purged, with their data.
    pub deleted_percent: f64,
    pub seed: u64,
}

impl Default for Night {
    /// The night: a few percent updated in place, 1% new, 0.5% deleted.
    fn default() -> Self {
        Night {
            read_percent: 3.0,
            moved_percent: 1.0,
            new_percent: 1.0,
            deleted_percent: 0.5,
            seed: 1,
        }
    }
}

/// Runs one whole night on `store` (flags, moves, purges, then new mail);
/// returns how many messages it held before.
pub fn night(sandbox: &Sandbox, store: &mut GeneratedStore, n: &Night) -> anyhow::Result<u64> {
    let before = messages(sandbox, store)?.len() as u64;
    let share = |pct: f64| ((before as f64) * pct / 100.0).ceil() as usize;
    toggle_read(sandbox, store, share(n.read_percent), n.seed)?;
    move_messages(sandbox, store, share(n.moved_percent), n.seed + 1)?;
    delete_messages(sandbox, store, share(n.deleted_percent), n.seed + 2)?;
    let new = share(n.new_percent) as u32;
    super::add_attachments(sandbox, store, new, n.seed.wrapping_mul(7919))
        .context("while adding a night's messages")?;
    Ok(before)
}

/// What [`delete_messages`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    pub messages: Vec<u32>,
    pub attachments: u64,
    /// Instances whose last reference went, with their data.
    pub instances: Vec<u32>,
    /// Files (and files_v2 directories) removed from the attachment tree.
    pub files: u64,
}

/// Gives every message without one an unread PR_MESSAGE_FLAGS, as Kopano
/// writes on delivery (the builder predates it); returns the rows added. Call
/// it once before the first backup: the first call touches every message.
pub fn add_message_flags(sandbox: &Sandbox, store: &mut GeneratedStore) -> anyhow::Result<u64> {
    let out = query(
        sandbox,
        store,
        &format!(
            "INSERT IGNORE INTO properties (hierarchyid, tag, type, val_ulong) \
             SELECT id, {PR_MESSAGE_FLAGS}, {PT_LONG}, 0 FROM hierarchy WHERE type = {TYPE_MESSAGE};\n\
             SELECT ROW_COUNT();\n"
        ),
    )?;
    let added: u64 = out
        .trim()
        .parse()
        .with_context(|| format!("while reading ROW_COUNT() {out:?}"))?;
    *store
        .expected
        .row_counts
        .entry("properties".into())
        .or_default() += added;
    Ok(added)
}

/// Flips the read bit of `n` random messages (one UPDATE of `properties`),
/// after giving messages delivered since the last call their flags; returns
/// the messages changed.
pub fn toggle_read(
    sandbox: &Sandbox,
    store: &mut GeneratedStore,
    n: usize,
    seed: u64,
) -> anyhow::Result<Vec<u32>> {
    add_message_flags(sandbox, store)?;
    let messages = messages(sandbox, store)?;
    let ids: Vec<u32> = pick(&messages, n, seed).iter().map(|m| m.id).collect();
    if !ids.is_empty() {
        query(
            sandbox,
            store,
            &format!(
                "UPDATE properties SET val_ulong = val_ulong ^ {MSGFLAG_READ} \
                 WHERE tag = {PR_MESSAGE_FLAGS} AND type = {PT_LONG} AND hierarchyid IN ({});\n",
                list(&ids)
            ),
        )?;
    }
    Ok(ids)
}

/// Moves `n` random messages to another mail folder of their owner (UPDATEs
/// of `hierarchy.parent`); returns (message, new folder) pairs. Messages
/// whose owner has one mail folder only stay.
pub fn move_messages(
    sandbox: &Sandbox,
    store: &GeneratedStore,
    n: usize,
    seed: u64,
) -> anyhow::Result<Vec<(u32, u32)>> {
    // Mail folders: children of a generic folder (IPM_SUBTREE), not the root.
    let folders = rows(&query(
        sandbox,
        store,
        &format!(
            "SELECT f.id, f.owner FROM hierarchy f JOIN hierarchy p ON p.id = f.parent \
             WHERE f.type = {TYPE_FOLDER} AND p.type = {TYPE_FOLDER} AND p.flags = 1;\n"
        ),
    )?)?;
    let mut by_owner: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for f in folders {
        by_owner.entry(f[1]).or_default().push(f[0]);
    }
    let messages = messages(sandbox, store)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d6f7665);
    let mut moves = Vec::new();
    let mut to: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for m in pick(&messages, n, seed) {
        let others: Vec<u32> = by_owner
            .get(&m.owner)
            .map(|fs| fs.iter().copied().filter(|&f| f != m.parent).collect())
            .unwrap_or_default();
        if others.is_empty() {
            continue;
        }
        let folder = others[rng.random_range(0..others.len())];
        moves.push((m.id, folder));
        to.entry(folder).or_default().push(m.id);
    }
    let mut sql = String::new();
    for (folder, ids) in &to {
        let _ = writeln!(
            sql,
            "UPDATE hierarchy SET parent = {folder} WHERE id IN ({});",
            list(ids)
        );
    }
    if !sql.is_empty() {
        query(sandbox, store, &sql)?;
    }
    Ok(moves)
}

/// Deletes and purges `n` random messages as Kopano's purge does: their
/// attachments, properties and references go, and data no other reference
/// uses is removed (files first, as Kopano unlinks before its commit; `lob`
/// rows in the same transaction). Keeps `store.expected` in step.
pub fn delete_messages(
    sandbox: &Sandbox,
    store: &mut GeneratedStore,
    n: usize,
    seed: u64,
) -> anyhow::Result<Purged> {
    let messages = messages(sandbox, store)?;
    let mut chosen: Vec<u32> = pick(&messages, n, seed).iter().map(|m| m.id).collect();
    chosen.sort_unstable();
    if chosen.is_empty() {
        return Ok(Purged::default());
    }
    let attachments: Vec<u32> = rows(&query(
        sandbox,
        store,
        &format!(
            "SELECT id FROM hierarchy WHERE type = {TYPE_ATTACHMENT} AND parent IN ({});\n",
            list(&chosen)
        ),
    )?)?
    .into_iter()
    .map(|r| r[0])
    .collect();
    let gone_hids: BTreeSet<u32> = chosen.iter().chain(&attachments).copied().collect();
    let all = list(&gone_hids.iter().copied().collect::<Vec<_>>());
    let properties: u64 = query(
        sandbox,
        store,
        &format!("SELECT COUNT(*) FROM properties WHERE hierarchyid IN ({all});\n"),
    )?
    .trim()
    .parse()
    .context("while counting the properties of purged messages")?;

    let exp = &mut store.expected;
    let before = exp.singleinstances.len();
    let mut touched = BTreeSet::new();
    exp.singleinstances.retain(|r| {
        let gone = gone_hids.contains(&r.hierarchyid);
        if gone {
            touched.insert(r.instanceid);
        }
        !gone
    });
    let references = (before - exp.singleinstances.len()) as u64;
    for r in &exp.singleinstances {
        touched.remove(&r.instanceid);
    }
    let gone: Vec<u32> = touched.into_iter().collect();

    let guid = hex::decode(&exp.server_guid).context("server_guid")?;
    let mut files = 0;
    let mut lob_rows = 0u64;
    for id in &gone {
        exp.referenced.remove(id);
        let info = exp.instances.remove(id);
        let data = info.as_ref().and_then(|i| i.path.clone());
        match store.spec.layout {
            Layout::FilesV1 { .. } => {
                if let Some(rel) = data {
                    remove(&store.attachment_path.join(&rel))?;
                    files += 1;
                    drop_sorted(&mut exp.data_files, &rel);
                }
            }
            Layout::FilesV2 => {
                let Some(content) = data else { continue };
                let dir = content.parent().context("files_v2 content path")?;
                let holder = dir.join("holder").join(Layout::v2_holder_name(&guid, *id));
                remove(&store.attachment_path.join(&holder))?;
                files += 1;
                drop_sorted(&mut exp.holder_files, &holder);
                let holders = store.attachment_path.join(dir).join("holder");
                let empty = std::fs::read_dir(&holders)
                    .with_context(|| format!("while listing {}", holders.display()))?
                    .next()
                    .is_none();
                if empty {
                    let abs = store.attachment_path.join(dir);
                    std::fs::remove_dir_all(&abs)
                        .with_context(|| format!("while removing {}", abs.display()))?;
                    files += 1;
                    drop_sorted(&mut exp.data_files, &content);
                }
            }
            Layout::Database | Layout::S3 => {
                if let Some(pos) = exp.lob.iter().position(|l| l.instanceid == *id) {
                    lob_rows += u64::from(exp.lob.remove(pos).chunks);
                }
            }
        }
    }

    let mut sql = format!(
        "START TRANSACTION;\n\
         DELETE FROM singleinstances WHERE hierarchyid IN ({all});\n\
         DELETE FROM properties WHERE hierarchyid IN ({all});\n\
         DELETE FROM hierarchy WHERE id IN ({all});\n"
    );
    if lob_rows > 0 {
        let _ = writeln!(
            sql,
            "DELETE FROM lob WHERE instanceid IN ({});",
            list(&gone)
        );
    }
    sql.push_str("COMMIT;\n");
    query(sandbox, store, &sql)?;

    for (table, n) in [
        ("hierarchy", gone_hids.len() as u64),
        ("properties", properties),
        ("singleinstances", references),
        ("lob", lob_rows),
    ] {
        let count = store.expected.row_counts.entry(table.into()).or_default();
        *count = count.saturating_sub(n);
    }
    Ok(Purged {
        messages: chosen,
        attachments: attachments.len() as u64,
        instances: gone,
        files,
    })
}

/// A message's place in the hierarchy.
#[derive(Debug, Clone, Copy)]
struct Message {
    id: u32,
    parent: u32,
    owner: u32,
}

fn messages(sandbox: &Sandbox, store: &GeneratedStore) -> anyhow::Result<Vec<Message>> {
    let out = query(
        sandbox,
        store,
        &format!(
            "SELECT id, parent, owner FROM hierarchy WHERE type = {TYPE_MESSAGE} ORDER BY id;\n"
        ),
    )?;
    Ok(rows(&out)?
        .into_iter()
        .map(|r| Message {
            id: r[0],
            parent: r[1],
            owner: r[2],
        })
        .collect())
}

/// `n` distinct random elements (all of them if there are fewer), in order.
fn pick<T: Copy>(from: &[T], n: usize, seed: u64) -> Vec<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = rand::seq::index::sample(&mut rng, from.len(), n.min(from.len())).into_vec();
    idx.sort_unstable();
    idx.into_iter().map(|i| from[i]).collect()
}

fn query(sandbox: &Sandbox, store: &GeneratedStore, sql: &str) -> anyhow::Result<String> {
    sandbox
        .sql(&format!("USE `{}`;\n{sql}", store.database))
        .with_context(|| format!("while changing database {}", store.database))
}

/// Tab-separated unsigned integers, one row a line.
fn rows(text: &str) -> anyhow::Result<Vec<Vec<u32>>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split('\t')
                .map(|v| {
                    v.parse()
                        .with_context(|| format!("while reading query output {l:?}"))
                })
                .collect()
        })
        .collect()
}

fn list(ids: &[u32]) -> String {
    let mut s = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s
}

fn remove(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("while removing {}", path.display()))
}

fn drop_sorted(v: &mut Vec<std::path::PathBuf>, p: &Path) {
    if let Ok(i) = v.binary_search_by(|x| x.as_path().cmp(p)) {
        v.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{StoreSpec, generate};
    use crate::sandbox::SandboxOptions;
    use std::path::PathBuf;

    fn count(sandbox: &Sandbox, store: &GeneratedStore, sql: &str) -> u64 {
        query(sandbox, store, sql).unwrap().trim().parse().unwrap()
    }

    fn tree(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let e = e.unwrap();
            let rel = dir.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                tree(root, &rel, out);
            } else {
                out.push(rel);
            }
        }
    }

    #[test]
    fn a_night_changes_rows_in_place_and_purges_unreferenced_data() {
        let sandbox = Sandbox::start(&SandboxOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let layouts = [
            Layout::FilesV1 { l1: 10, l2: 20 },
            Layout::FilesV2,
            Layout::Database,
        ];
        for (i, layout) in layouts.into_iter().enumerate() {
            let db = format!("night{i}");
            let spec = StoreSpec::small(layout, &db);
            let mut store = generate(&sandbox, &dir.path().join(&db), &spec).unwrap();
            let messages = count(
                &sandbox,
                &store,
                "SELECT COUNT(*) FROM hierarchy WHERE type = 5",
            );
            assert_eq!(add_message_flags(&sandbox, &mut store).unwrap(), messages);
            assert_eq!(add_message_flags(&sandbox, &mut store).unwrap(), 0);

            let read = toggle_read(&sandbox, &mut store, 7, 1).unwrap();
            assert_eq!(read.len(), 7);
            let flags = "SELECT COUNT(*) FROM properties WHERE tag = 3591 AND val_ulong = 1";
            assert_eq!(count(&sandbox, &store, flags), 7);
            // Messages delivered since get their flags on the next night.
            crate::generator::add_attachments(&sandbox, &mut store, 3, 9).unwrap();
            toggle_read(&sandbox, &mut store, 0, 2).unwrap();
            assert_eq!(
                count(
                    &sandbox,
                    &store,
                    "SELECT COUNT(*) FROM properties WHERE tag = 3591"
                ),
                messages + 3
            );

            let moves = move_messages(&sandbox, &store, 5, 3).unwrap();
            assert_eq!(moves.len(), 5);
            for (m, folder) in &moves {
                let sql = format!("SELECT parent FROM hierarchy WHERE id = {m}");
                assert_eq!(count(&sandbox, &store, &sql), u64::from(*folder));
            }

            // Half the messages: shared and duplicated data is hit as well.
            let before = store.expected.instances.len();
            let purged = delete_messages(&sandbox, &mut store, messages as usize / 2, 4).unwrap();
            assert_eq!(purged.messages.len() as u64, messages / 2);
            assert!(!purged.instances.is_empty() && purged.instances.len() < before);
            let left = format!(
                "SELECT COUNT(*) FROM hierarchy WHERE id IN ({}) OR parent IN ({0})",
                list(&purged.messages)
            );
            assert_eq!(count(&sandbox, &store, &left), 0);
            for (table, n) in &store.expected.row_counts {
                let sql = format!("SELECT COUNT(*) FROM `{table}`");
                assert_eq!(count(&sandbox, &store, &sql), *n, "{layout} {table}");
            }
            let refs = query(
                &sandbox,
                &store,
                "SELECT instanceid, hierarchyid, tag FROM singleinstances ORDER BY 1, 2, 3",
            )
            .unwrap();
            let want: Vec<Vec<u32>> = store
                .expected
                .singleinstances
                .iter()
                .map(|r| vec![r.instanceid, r.hierarchyid, u32::from(r.tag)])
                .collect();
            assert_eq!(rows(&refs).unwrap(), want, "{layout}");
            let e = &store.expected;
            let mut files = Vec::new();
            tree(&store.attachment_path, Path::new(""), &mut files);
            files.sort();
            let mut want: Vec<PathBuf> = [
                &e.data_files,
                &e.holder_files,
                &e.extra_files,
                &e.leftover_files,
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
            want.sort();
            assert_eq!(files, want, "{layout}");
            for id in &purged.instances {
                assert!(!e.referenced.contains(id));
            }
        }
        sandbox.stop().unwrap();
    }
}
