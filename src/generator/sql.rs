//! SQL text for generated stores: Kopano's table definitions (kopano-facts.md
//! section 2, in utf8mb4) and a writer that batches rows into multi-row
//! INSERTs and streams them out, so memory stays flat for any store size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Every table a generated store has, in creation order.
pub const TABLES: &[&str] = &[
    "hierarchy",
    "properties",
    "singleinstances",
    "lob",
    "settings",
    "versions",
    "stores",
    "users",
];

/// Kopano's definitions of the tables a backup cares about, plus a reduced
/// `properties` table for message text.
pub const SCHEMA: &str = "
CREATE TABLE `hierarchy` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `parent` int(11) unsigned DEFAULT '0',
  `type` tinyint(4) unsigned NOT NULL DEFAULT '0',
  `flags` smallint(6) unsigned NOT NULL DEFAULT '0',
  `owner` int(11) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (`id`),
  KEY `parenttypeflags` (`parent`,`type`,`flags`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `properties` (
  `hierarchyid` int(11) unsigned NOT NULL DEFAULT '0',
  `tag` smallint(6) unsigned NOT NULL DEFAULT '0',
  `type` smallint(6) unsigned NOT NULL,
  `val_ulong` int(11) unsigned DEFAULT NULL,
  `val_string` longtext,
  `val_binary` longblob,
  `val_double` double DEFAULT NULL,
  `val_longint` bigint(20) DEFAULT NULL,
  `val_hi` int(11) DEFAULT NULL,
  `val_lo` int(11) unsigned DEFAULT NULL,
  `comp` tinyint(1) DEFAULT '0',
  PRIMARY KEY (`hierarchyid`,`tag`,`type`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `singleinstances` (
  `instanceid` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `hierarchyid` int(11) unsigned NOT NULL DEFAULT '0',
  `tag` smallint(6) unsigned NOT NULL DEFAULT '0',
  `filename` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`instanceid`,`hierarchyid`,`tag`),
  UNIQUE KEY `hkey` (`hierarchyid`,`tag`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `lob` (
  `instanceid` int(11) unsigned NOT NULL,
  `chunkid` smallint(6) unsigned NOT NULL,
  `tag` smallint(6) unsigned NOT NULL,
  `val_binary` longblob,
  PRIMARY KEY (`instanceid`,`tag`,`chunkid`)
) ENGINE=InnoDB MAX_ROWS=1000000000 AVG_ROW_LENGTH=1750 DEFAULT CHARSET=utf8mb4;
CREATE TABLE `settings` (
  `name` varchar(185) BINARY NOT NULL,
  `value` blob NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `versions` (
  `major` int(11) unsigned NOT NULL DEFAULT '0',
  `minor` int(11) unsigned NOT NULL DEFAULT '0',
  `micro` int(11) unsigned NOT NULL DEFAULT '0',
  `revision` int(11) unsigned NOT NULL DEFAULT '0',
  `databaserevision` int(11) unsigned NOT NULL DEFAULT '0',
  `updatetime` datetime NOT NULL,
  PRIMARY KEY (`major`,`minor`,`micro`,`revision`,`databaserevision`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `stores` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `hierarchy_id` int(11) unsigned NOT NULL DEFAULT '0',
  `user_id` int(11) unsigned NOT NULL DEFAULT '0',
  `type` smallint(6) unsigned NOT NULL DEFAULT '0',
  `user_name` varchar(255) NOT NULL DEFAULT '',
  `company` int(11) unsigned NOT NULL DEFAULT '0',
  `guid` blob NOT NULL,
  PRIMARY KEY (`user_id`,`hierarchy_id`,`type`),
  UNIQUE KEY `id` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `users` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `externid` blob,
  `objectclass` int(11) NOT NULL DEFAULT '0',
  `signature` varbinary(255) NOT NULL DEFAULT '0',
  `company` int(11) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (`id`),
  UNIQUE KEY `externid` (`externid`(255),`objectclass`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
";

/// Flush a table's pending INSERT once it is this long; far below the
/// client's and server's max_allowed_packet, big enough to load fast.
const FLUSH_AT: usize = 1 << 20;

/// Batches rows per table into multi-row INSERT statements.
pub struct SqlWriter<'w> {
    out: &'w mut dyn Write,
    pending: BTreeMap<&'static str, String>,
    counts: BTreeMap<String, u64>,
}

impl<'w> SqlWriter<'w> {
    pub fn new(out: &'w mut dyn Write) -> Self {
        SqlWriter {
            out,
            pending: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Writes a statement as is (DDL, SET ...).
    pub fn raw(&mut self, sql: &str) -> io::Result<()> {
        self.out.write_all(sql.as_bytes())
    }

    /// Queues one row; `values` is the parenthesised tuple.
    pub fn row(&mut self, table: &'static str, values: &str) -> io::Result<()> {
        let buf = self.pending.entry(table).or_default();
        if buf.is_empty() {
            let _ = write!(buf, "INSERT INTO `{table}` VALUES ");
        } else {
            buf.push(',');
        }
        buf.push_str(values);
        *self.counts.entry(table.to_string()).or_default() += 1;
        if buf.len() >= FLUSH_AT {
            let mut stmt = std::mem::take(buf);
            stmt.push_str(";\n");
            self.out.write_all(stmt.as_bytes())?;
        }
        Ok(())
    }

    /// Writes every pending statement; returns the rows written per table.
    pub fn finish(mut self) -> io::Result<BTreeMap<String, u64>> {
        for (_, mut stmt) in std::mem::take(&mut self.pending) {
            if !stmt.is_empty() {
                stmt.push_str(";\n");
                self.out.write_all(stmt.as_bytes())?;
            }
        }
        self.out.flush()?;
        Ok(self.counts)
    }
}

/// A MariaDB string literal (default sql_mode, i.e. backslash escapes on).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '\'' => q.push_str("\\'"),
            '\0' => q.push_str("\\0"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\u{1a}' => q.push_str("\\Z"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

/// A binary literal: `0x...`, or `''` for no bytes (`0x` alone is invalid).
pub fn hex_literal(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "''".to_string()
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

/// A `` `name` `` identifier; names are checked to be plain by the caller.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_rows_and_counts_them() {
        let mut out = Vec::new();
        let mut w = SqlWriter::new(&mut out);
        w.row("users", "(1)").unwrap();
        w.row("users", "(2)").unwrap();
        w.row("lob", "(3)").unwrap();
        let counts = w.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "INSERT INTO `lob` VALUES (3);\nINSERT INTO `users` VALUES (1),(2);\n"
        );
        assert_eq!(counts["users"], 2);
    }

    #[test]
    fn quotes_everything_mariadb_needs() {
        assert_eq!(quote("a'b\\c\n\0"), "'a\\'b\\\\c\\n\\0'");
        assert_eq!(hex_literal(b""), "''");
        assert_eq!(hex_literal(b"\x01\xff"), "0x01ff");
    }
}
