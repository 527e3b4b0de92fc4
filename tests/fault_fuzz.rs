//! Property tests (proptest, bounded case counts): the SQL scanner, the
//! server.cfg reader, the manifest and the index/reference readers never
//! panic on arbitrary input; and the scanner finds exactly the
//! `singleinstances` rows of dumps generated from random rows, with hostile
//! strings in other tables and the input fed in random chunks.

use std::fs;
use std::io;
use std::path::Path;

use kcbackup::attachments::index::read_index;
use kcbackup::dump::refs::read_rows;
use kcbackup::dump::scanner::{LobInstance, ScanSink, Scanner, SingleInstanceRow};
use kcbackup::repo::digest::sha256_hex;
use kcbackup::repo::manifest::Manifest;
use kcbackup::settings::kopano_cfg::KopanoCfg;
use proptest::prelude::*;

#[derive(Default)]
struct Collect(Vec<SingleInstanceRow>);

impl ScanSink for Collect {
    fn singleinstance(&mut self, row: SingleInstanceRow) -> io::Result<()> {
        self.0.push(row);
        Ok(())
    }
    fn lob_instance(&mut self, _lob: LobInstance) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `dump` in chunks of the given lengths (cycled), then finishes.
fn scan(dump: &[u8], chunks: &[usize]) -> io::Result<Vec<SingleInstanceRow>> {
    let mut sc = Scanner::new(Collect::default());
    let mut rest = dump;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let (chunk, tail) = rest.split_at(n.clamp(1, rest.len()));
        sc.feed(chunk)?;
        rest = tail;
        i += 1;
    }
    let (_, sink) = sc.finish()?;
    Ok(sink.0)
}

/// Pieces that look like SQL structure, to be found inside string values.
const NASTY: &[&str] = &[
    "'",
    "''",
    "\\",
    "\\'",
    "\"",
    ";",
    "(",
    ")",
    "),(",
    ",",
    "\n",
    "\r\n",
    "\0",
    "\u{1a}",
    "`",
    "/*",
    "*/",
    "/*!40101 ",
    "-- ",
    "#",
    "DELIMITER ;;\n",
    "INSERT INTO `singleinstances` VALUES (1,2,3,'x');",
    "CREATE TABLE `singleinstances` (`a` int);",
    "\n-- Dump completed on 2026-01-01\n",
    "ü",
    "🎉",
    "x",
    "0x41",
    "NULL",
];

fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(NASTY).prop_map(str::to_string),
            1 => "[a-z0-9/ ]{0,8}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// A string literal as mysqldump writes it.
fn quote(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn si_row() -> impl Strategy<Value = SingleInstanceRow> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        prop::option::of(nasty_string()),
    )
        .prop_map(
            |(instanceid, hierarchyid, tag, filename)| SingleInstanceRow {
                instanceid,
                hierarchyid,
                tag,
                // '' reads as no filename (see the scanner's docs).
                filename: filename.filter(|f| !f.is_empty()),
            },
        )
}

const SI_TABLE: &str = "CREATE TABLE `singleinstances` (\n  `instanceid` int(11) unsigned NOT NULL AUTO_INCREMENT,\n  `hierarchyid` int(11) unsigned NOT NULL DEFAULT '0',\n  `tag` smallint(6) unsigned NOT NULL DEFAULT '0',\n  `filename` varchar(255) DEFAULT NULL,\n  PRIMARY KEY (`instanceid`,`hierarchyid`,`tag`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n";
const PROPS_TABLE: &str = "CREATE TABLE `properties` (\n  `hierarchyid` int(11) unsigned NOT NULL DEFAULT '0',\n  `tag` smallint(6) unsigned NOT NULL DEFAULT '0',\n  `type` smallint(6) unsigned NOT NULL,\n  `val_string` longtext,\n  PRIMARY KEY (`hierarchyid`,`tag`,`type`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n";

/// INSERT statements of `rows` (already rendered tuples), `per` rows each.
fn inserts(table: &str, rows: &[String], per: usize) -> String {
    rows.chunks(per.max(1))
        .map(|c| format!("INSERT INTO `{table}` VALUES {};\n", c.join(",")))
        .collect()
}

fn dump_text(
    si: &[SingleInstanceRow],
    props: &[(u32, String)],
    per: usize,
    props_first: bool,
) -> String {
    let si_rows: Vec<String> = si
        .iter()
        .map(|r| {
            let f = r.filename.as_deref().map_or("NULL".to_string(), quote);
            format!("({},{},{},{f})", r.instanceid, r.hierarchyid, r.tag)
        })
        .collect();
    let prop_rows: Vec<String> = props
        .iter()
        .enumerate()
        .map(|(i, (h, s))| format!("({h},{i},30,{})", quote(s)))
        .collect();
    let si_part = format!(
        "{SI_TABLE}/*!40000 ALTER TABLE `singleinstances` DISABLE KEYS */;\n{}",
        inserts("singleinstances", &si_rows, per)
    );
    let props_part = format!("{PROPS_TABLE}{}", inserts("properties", &prop_rows, per));
    let (a, b) = if props_first {
        (props_part, si_part)
    } else {
        (si_part, props_part)
    };
    format!(
        "-- MariaDB dump 10.19\n/*!40101 SET NAMES utf8mb4 */;\n{a}-- a comment with 'quotes\n{b}/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n-- Dump completed on 2026-12-01 11:00:00\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_scanner_finds_exactly_the_singleinstances_rows(
        si in prop::collection::vec(si_row(), 0..30),
        props in prop::collection::vec((any::<u32>(), nasty_string()), 0..30),
        per in 1usize..8,
        props_first in any::<bool>(),
        chunks in prop::collection::vec(1usize..200, 1..6),
    ) {
        let dump = dump_text(&si, &props, per, props_first);
        let found = scan(dump.as_bytes(), &chunks).expect("a well-formed dump scans");
        prop_assert_eq!(found, si);
    }

    #[test]
    fn the_scanner_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..64, 1..4),
    ) {
        let _ = scan(&bytes, &chunks);
    }

    #[test]
    fn the_scanner_never_panics_on_damaged_dumps(
        si in prop::collection::vec(si_row(), 1..10),
        props in prop::collection::vec((any::<u32>(), nasty_string()), 0..10),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..5),
    ) {
        let mut dump = dump_text(&si, &props, 3, false).into_bytes();
        for (at, byte) in flips {
            let i = at.index(dump.len());
            dump[i] = byte;
        }
        dump.truncate(cut.index(dump.len() + 1));
        let _ = scan(&dump, &[usize::MAX]);
    }

    #[test]
    fn the_server_cfg_reader_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                "[a-z_]{1,12} *= *[ -~]{0,20}",
                "[ -~]{0,30}",
                Just("!include missing.cfg".to_string()),
                Just("!include".to_string()),
                Just("#comment = x".to_string()),
                Just("= value".to_string()),
            ],
            0..20,
        ),
        raw in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = lines.join("\n");
        let _ = KopanoCfg::parse_str(&text, dir.path());
        let path = dir.path().join("server.cfg");
        fs::write(&path, &raw).unwrap();
        let _ = KopanoCfg::read(&path);
    }

    #[test]
    fn the_manifest_reader_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..400),
        doc in json_value(),
        sealed in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for bytes in [raw, serde_json::to_vec(&doc).unwrap()] {
            fs::write(dir.path().join("manifest.json"), &bytes).unwrap();
            if sealed {
                fs::write(
                    dir.path().join("manifest.json.sha256"),
                    format!("{}  manifest.json\n", sha256_hex(&bytes)),
                )
                .unwrap();
            }
            let _ = Manifest::load(dir.path());
            let _ = Manifest::load_suspect(dir.path());
        }
    }

    #[test]
    fn the_index_and_reference_readers_never_panic(
        lines in prop::collection::vec(
            prop_oneof![
                json_value().prop_map(|v| v.to_string()),
                Just(r#"{"path":"1/2/3","kind":"file","size":1,"sha256":"00"}"#.to_string()),
                Just(r#"{"instanceid":1,"hierarchyid":2,"tag":3,"filename":null}"#.to_string()),
                "[ -~]{0,40}",
            ],
            0..10,
        ),
        raw in prop::collection::vec(any::<u8>(), 0..300),
        compressed in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl.zst");
        let text = lines.join("\n");
        let body = if compressed {
            zstd::encode_all(text.as_bytes(), 1).unwrap()
        } else {
            raw
        };
        fs::write(&path, body).unwrap();
        drain(&path);
    }
}

/// Reads every entry of `path` with each reader, ignoring errors.
fn drain(path: &Path) {
    if let Ok(entries) = read_index(path) {
        entries.take(1000).for_each(drop);
    }
    if let Ok(rows) = read_rows::<SingleInstanceRow>(path) {
        rows.take(1000).for_each(drop);
    }
    if let Ok(rows) = read_rows::<LobInstance>(path) {
        rows.take(1000).for_each(drop);
    }
}

/// Small JSON documents, biased to the manifest's own keys.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("format".to_string()),
                        Just("set".to_string()),
                        Just("status".to_string()),
                        Just("files".to_string()),
                        Just("database".to_string()),
                        Just("attachments".to_string()),
                        Just("path".to_string()),
                        Just("size".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
