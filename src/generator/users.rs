//! The `db` user plugin's directory for a generated store: users of every
//! object class, groups, companies and address lists in `users` and
//! `object`, and group memberships, send-as and company relations in
//! `objectrelation` (kopano-facts.md section 6), with the counts as truth.

use std::collections::BTreeMap;

use anyhow::Context;

use super::GeneratedStore;
use super::sql::{SqlWriter, hex_literal};
use crate::sandbox::Sandbox;

/// The `db` plugin's tables (Kopano's definitions, reduced to the keys).
const SCHEMA: &str = "
CREATE TABLE `object` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `externid` varbinary(255) DEFAULT NULL,
  `objectclass` int(11) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (`id`),
  UNIQUE KEY `externid` (`externid`,`objectclass`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `objectproperty` (
  `objectid` int(11) unsigned NOT NULL DEFAULT '0',
  `propname` varchar(255) NOT NULL,
  `value` text,
  PRIMARY KEY (`objectid`,`propname`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `objectrelation` (
  `objectid` int(11) unsigned NOT NULL DEFAULT '0',
  `parentobjectid` int(11) unsigned NOT NULL DEFAULT '0',
  `relationtype` tinyint(11) unsigned NOT NULL,
  PRIMARY KEY (`objectid`,`parentobjectid`,`relationtype`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
";

/// How many objects of each class [`add_directory`] adds (besides the
/// generator's active users, SYSTEM and Everyone).
pub const ADDED: &[(u32, u64)] = &[
    (0x10001, 2), // active users without a store of their own here
    (0x10002, 2), // shared stores
    (0x10003, 1), // rooms
    (0x10004, 1), // equipment
    (0x10005, 3), // contacts
    (0x30001, 2), // distribution lists
    (0x30002, 1), // security groups
    (0x30003, 1), // dynamic groups
    (0x40001, 2), // companies
    (0x40002, 1), // address lists
];

/// What a census of the store must count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// `users` rows by object class, the generator's own rows included.
    pub users: BTreeMap<u32, u64>,
    /// `objectrelation` rows by relation type.
    pub relations: BTreeMap<u32, u64>,
    /// `stores` rows by type.
    pub stores: BTreeMap<u32, u64>,
    /// `users.id`s of the added active users (for tests that delete one).
    pub added_active_users: Vec<u32>,
}

/// Adds the directory to `store`'s database and updates its expected row
/// counts. Deterministic; call once per store.
pub fn add_directory(sandbox: &Sandbox, store: &mut GeneratedStore) -> anyhow::Result<Directory> {
    // The generator's users: SYSTEM (1), Everyone (2), then 3.. with a store each.
    let first_id = 3 + store.spec.users;
    let mut users: BTreeMap<u32, u64> = BTreeMap::new();
    users.insert(0x10001, 1 + u64::from(store.spec.users));
    users.insert(0x30002, 1);
    let mut relations: BTreeMap<u32, u64> = BTreeMap::new();
    let mut added_active_users = Vec::new();
    let counts = sandbox
        .load_with(Some(&store.database), |w| {
            let mut sql = SqlWriter::new(w);
            sql.raw("SET NAMES utf8mb4;\n")?;
            sql.raw(SCHEMA)?;
            let mut id = first_id;
            let mut by_class: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for &(class, n) in ADDED {
                for i in 0..n {
                    let extern_id = hex_literal(format!("obj-{class:x}-{i}").as_bytes());
                    sql.row("users", &format!("({id},{extern_id},{class},'0',0)"))?;
                    sql.row("object", &format!("({id},{extern_id},{class})"))?;
                    let name = format!(
                        "'{}{i}'",
                        crate::census::class_name(class).replace(' ', "-")
                    );
                    sql.row("objectproperty", &format!("({id},'loginname',{name})"))?;
                    by_class.entry(class).or_default().push(id);
                    *users.entry(class).or_default() += 1;
                    if class == 0x10001 {
                        added_active_users.push(id);
                    }
                    id += 1;
                }
            }
            let people: Vec<u32> = [0x10001, 0x10002, 0x10003]
                .iter()
                .flat_map(|c| by_class[c].clone())
                .collect();
            let mut relate = |sql: &mut SqlWriter<'_>, child: u32, parent: u32, kind: u32| {
                *relations.entry(kind).or_default() += 1;
                sql.row("objectrelation", &format!("({child},{parent},{kind})"))
            };
            // Every person in the first list, every other one in the second.
            for (i, p) in people.iter().enumerate() {
                relate(&mut sql, *p, by_class[&0x30001][0], 1)?;
                if i % 2 == 0 {
                    relate(&mut sql, *p, by_class[&0x30001][1], 1)?;
                }
            }
            // A group inside the security group.
            relate(&mut sql, by_class[&0x30001][0], by_class[&0x30002][0], 1)?;
            // Send-as: each active user may send as the first shared store.
            for u in &by_class[&0x10001] {
                relate(&mut sql, *u, by_class[&0x10002][0], 6)?;
            }
            relate(&mut sql, by_class[&0x10002][1], by_class[&0x10002][0], 6)?;
            // The first company views the second; a user administers it.
            let companies = &by_class[&0x40001];
            relate(&mut sql, companies[0], companies[1], 2)?;
            relate(&mut sql, by_class[&0x10001][0], companies[1], 3)?;
            // The contacts are in the address list.
            for c in &by_class[&0x10005] {
                relate(&mut sql, *c, by_class[&0x40002][0], 7)?;
            }
            Ok(sql.finish()?)
        })
        .context("while adding the user directory to the generated store")?;
    for (table, n) in counts {
        *store.expected.row_counts.entry(table).or_default() += n;
    }
    let stores = BTreeMap::from([(0, u64::from(store.spec.users))]);
    Ok(Directory {
        users,
        relations,
        stores,
        added_active_users,
    })
}
