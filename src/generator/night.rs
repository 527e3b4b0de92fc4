//! One simulated night of mail on a generated store, in real SQL: read flags
//! set and messages moved between folders in place (scattered through the
//! big tables), new messages appended, and messages deleted and purged with
//! their attachments. For the dump-chunk measurements and tests.

use anyhow::Context;

use super::{GeneratedStore, add_attachments, sql::ident};
use crate::sandbox::Sandbox;

/// `PR_MESSAGE_FLAGS` (0x0E07), PT_LONG: where Kopano keeps the read flag.
const PR_MESSAGE_FLAGS: u16 = 0x0E07;
const PT_LONG: u16 = 3;

/// How much of the store one night touches, in percent of its messages.
#[derive(Debug, Clone, Copy)]
pub struct Night {
    /// Messages whose read flag flips (a `properties` row set or inserted).
    pub read_percent: f64,
    /// Messages moved to another folder of their owner (`hierarchy.parent`).
    pub moved_percent: f64,
    /// New messages, one attachment each, appended.
    pub new_percent: f64,
    /// Messages deleted and purged, with their attachments' rows.
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

/// Runs one night on `store`; returns how many messages it held before.
pub fn night(sandbox: &Sandbox, store: &mut GeneratedStore, n: &Night) -> anyhow::Result<u64> {
    let db = ident(&store.database);
    let count = |sql: &str| -> anyhow::Result<u64> {
        let out = sandbox.sql(sql)?;
        out.trim()
            .parse()
            .with_context(|| format!("unexpected answer {out:?}"))
    };
    let messages = count(&format!(
        "SELECT COUNT(*) FROM {db}.hierarchy WHERE type = 5"
    ))?;
    let (s, p) = (n.seed, |pct: f64| pct / 100.0);
    sandbox
        .sql(&format!(
            "USE {db};
             INSERT INTO properties (hierarchyid, tag, type, val_ulong)
               SELECT id, {PR_MESSAGE_FLAGS}, {PT_LONG}, 1 FROM hierarchy
               WHERE type = 5 AND RAND({s}) < {read}
               ON DUPLICATE KEY UPDATE val_ulong = val_ulong ^ 1;
             UPDATE hierarchy h JOIN (
                 SELECT owner, MIN(id) AS a, MAX(id) AS b FROM hierarchy
                 WHERE type = 3 AND flags = 1 GROUP BY owner) f ON f.owner = h.owner
               SET h.parent = IF(h.parent = f.b, f.a, f.b)
               WHERE h.type = 5 AND RAND({s} + 1) < {moved};
             CREATE TABLE night_gone (id INT UNSIGNED PRIMARY KEY) ENGINE=InnoDB;
             INSERT INTO night_gone SELECT id FROM hierarchy
               WHERE type = 5 AND RAND({s} + 2) < {deleted};
             INSERT IGNORE INTO night_gone SELECT h.id FROM hierarchy h
               JOIN night_gone g ON h.parent = g.id WHERE h.type = 7;
             CREATE TABLE night_instances (id INT UNSIGNED PRIMARY KEY) ENGINE=InnoDB;
             INSERT IGNORE INTO night_instances SELECT s.instanceid FROM singleinstances s
               JOIN night_gone g ON s.hierarchyid = g.id;
             DELETE s FROM singleinstances s JOIN night_gone g ON s.hierarchyid = g.id;
             DELETE i FROM night_instances i JOIN singleinstances s ON s.instanceid = i.id;
             DELETE l FROM lob l JOIN night_instances i ON l.instanceid = i.id;
             DELETE pr FROM properties pr JOIN night_gone g ON pr.hierarchyid = g.id;
             DELETE h FROM hierarchy h JOIN night_gone g ON h.id = g.id;
             DROP TABLE night_gone, night_instances;",
            read = p(n.read_percent),
            moved = p(n.moved_percent),
            deleted = p(n.deleted_percent),
        ))
        .context("while updating the store for a night")?;
    let new = ((messages as f64) * p(n.new_percent)).ceil() as u32;
    add_attachments(sandbox, store, new, n.seed.wrapping_mul(7919))
        .context("while adding a night's messages")?;
    Ok(messages)
}
