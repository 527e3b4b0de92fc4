//! The census of a live Kopano database that `upgrade prepare` records
//! and `upgrade finish` compares: the manual's post-upgrade checklist
//! (kopano-facts.md section 6) as counts.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mysql::Client;
use crate::settings::Settings;
use crate::settings::kopano_cfg::{KopanoCfg, bool_value};

/// The checklist's name for a `users.objectclass` (section 6).
pub fn class_name(objectclass: u32) -> String {
    match objectclass {
        0x10001 => "active users".into(),
        0x10002 => "shared stores".into(),
        0x10003 => "rooms".into(),
        0x10004 => "equipment".into(),
        0x10005 => "contacts".into(),
        0x30001 => "groups".into(),
        0x30002 => "security groups".into(),
        0x30003 => "dynamic groups".into(),
        0x40001 => "companies".into(),
        0x40002 => "address lists".into(),
        other => format!("objectclass {other:#x}"),
    }
}

/// The name of an `objectrelation.relationtype` (section 6).
pub fn relation_name(relationtype: u32) -> String {
    match relationtype {
        1 => "group memberships".into(),
        2 => "company views".into(),
        3 => "company admins".into(),
        4 => "quota user recipients".into(),
        5 => "quota company recipients".into(),
        6 => "send-as relations".into(),
        7 => "address list members".into(),
        other => format!("relation type {other}"),
    }
}

/// The name of a `stores.type`.
pub fn store_type_name(store_type: u32) -> String {
    match store_type {
        0 => "private stores".into(),
        1 => "public stores".into(),
        2 => "archive stores".into(),
        other => format!("stores of type {other}"),
    }
}

/// Counts by checklist name; the newest version and safe mode beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub taken: DateTime<Utc>,
    pub database: String,
    /// `users` rows by object class (every user plugin fills this table).
    pub users: BTreeMap<String, u64>,
    pub stores: BTreeMap<String, u64>,
    /// server.cfg's `user_plugin` (default `db`).
    pub user_plugin: String,
    /// `objectrelation` rows by type; `None` when the plugin keeps them
    /// elsewhere (ldap, unix: the directory) or the table is absent.
    pub relations: Option<BTreeMap<String, u64>>,
    /// The greatest `versions` row.
    pub version: Option<String>,
    pub user_safe_mode: bool,
}

/// One checklist line that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub item: String,
    pub before: u64,
    pub after: u64,
}

impl Census {
    /// Counts the live database of `settings`.
    pub fn take(settings: &Settings) -> Result<Census> {
        let client = Client::new(&settings.mysql)?;
        let cfg = KopanoCfg::read(&settings.server_cfg)?;
        let user_plugin = cfg.get_or("user_plugin", "db").to_string();
        let user_safe_mode = bool_value(cfg.get_or("user_safe_mode", "no"));
        let census = (|| -> Result<Census> {
            let users = grouped(
                &client,
                "SELECT objectclass, COUNT(*) FROM users GROUP BY 1",
            )?
            .into_iter()
            .map(|(c, n)| (class_name(c), n))
            .collect();
            let stores = grouped(&client, "SELECT type, COUNT(*) FROM stores GROUP BY 1")?
                .into_iter()
                .map(|(t, n)| (store_type_name(t), n))
                .collect();
            let has_relations = client
                .query_value(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = 'objectrelation'",
                )?
                .is_some_and(|n| n != "0");
            let relations = if user_plugin == "db" && has_relations {
                let rows = grouped(
                    &client,
                    "SELECT relationtype, COUNT(*) FROM objectrelation GROUP BY 1",
                )?;
                let mut named: BTreeMap<String, u64> =
                    [1, 6].into_iter().map(|t| (relation_name(t), 0)).collect();
                named.extend(rows.into_iter().map(|(t, n)| (relation_name(t), n)));
                Some(named)
            } else {
                None
            };
            let version = client.query_value(
                "SELECT CONCAT(major, '.', minor, '.', micro, '.', revision, \
                 ' (database revision ', databaserevision, ')') FROM versions \
                 ORDER BY major DESC, minor DESC, micro DESC, revision DESC, \
                 databaserevision DESC LIMIT 1",
            )?;
            Ok(Census {
                taken: Utc::now(),
                database: settings.mysql.database.clone(),
                users,
                stores,
                user_plugin: user_plugin.clone(),
                relations,
                version,
                user_safe_mode,
            })
        })();
        census.with_context(|| {
            format!(
                "while taking the census of database {}",
                settings.mysql.database
            )
        })
    }

    /// Every count as one checklist, with the item names of both sides.
    fn items(&self) -> BTreeMap<String, u64> {
        let mut all: BTreeMap<String, u64> = self.users.clone();
        all.extend(self.stores.clone());
        if let Some(r) = &self.relations {
            all.extend(r.clone());
        }
        all
    }

    /// What differs from `before`, item by item (a missing item counts 0).
    /// The version is expected to change and is not compared.
    pub fn changes_since(&self, before: &Census) -> Vec<Change> {
        let (a, b) = (before.items(), self.items());
        let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|item| {
                let before = a.get(item).copied().unwrap_or(0);
                let after = b.get(item).copied().unwrap_or(0);
                (before != after).then(|| Change {
                    item: item.clone(),
                    before,
                    after,
                })
            })
            .collect()
    }

    /// A few lines for humans.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (item, n) in self.users.iter().chain(&self.stores) {
            out.push_str(&format!("  {item}: {n}\n"));
        }
        match &self.relations {
            Some(r) => {
                for (item, n) in r {
                    out.push_str(&format!("  {item}: {n}\n"));
                }
            }
            None => out.push_str(&format!(
                "  group memberships, send-as: kept by the {} user plugin (the directory), not counted\n",
                self.user_plugin
            )),
        }
        out.push_str(&format!(
            "  version: {}\n  user_safe_mode: {}\n",
            self.version.as_deref().unwrap_or("(no versions row)"),
            if self.user_safe_mode { "yes" } else { "no" }
        ));
        out
    }
}

/// `SELECT key, COUNT(*) ... GROUP BY 1` as numbers.
fn grouped(client: &Client, sql: &str) -> Result<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for line in client.query(sql)?.lines() {
        let mut cols = line.split('\t');
        let (Some(k), Some(n)) = (cols.next(), cols.next()) else {
            continue;
        };
        let k: u32 = k
            .parse()
            .with_context(|| format!("unexpected value {k:?} from {sql}"))?;
        let n: u64 = n
            .parse()
            .with_context(|| format!("unexpected count {n:?} from {sql}"))?;
        out.insert(k, n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(users: &[(&str, u64)]) -> Census {
        Census {
            taken: Utc::now(),
            database: "kopano".into(),
            users: users.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            stores: BTreeMap::new(),
            user_plugin: "db".into(),
            relations: Some(BTreeMap::new()),
            version: Some("8.7.0.1 (database revision 2)".into()),
            user_safe_mode: false,
        }
    }

    #[test]
    fn changes_name_each_differing_item_and_ignore_the_version() {
        let before = census(&[("active users", 5), ("groups", 2)]);
        let mut after = census(&[("active users", 4)]);
        after.version = Some("9.0".into());
        let changes = after.changes_since(&before);
        assert_eq!(
            changes,
            vec![
                Change {
                    item: "active users".into(),
                    before: 5,
                    after: 4
                },
                Change {
                    item: "groups".into(),
                    before: 2,
                    after: 0
                },
            ]
        );
        assert!(before.changes_since(&before).is_empty());
    }

    #[test]
    fn names_follow_the_facts() {
        assert_eq!(class_name(65537), "active users");
        assert_eq!(class_name(196611), "dynamic groups");
        assert_eq!(class_name(262146), "address lists");
        assert_eq!(relation_name(6), "send-as relations");
        assert_eq!(store_type_name(2), "archive stores");
    }
}
