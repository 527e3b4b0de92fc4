//! Tests of the dump scanner: whole dumps fed in every chunk size, nasty
//! string contents, literals, DELIMITER blocks, lob gaps, malformed input.

use super::*;

#[derive(Debug, Default, PartialEq)]
struct Collect {
    si: Vec<SingleInstanceRow>,
    lobs: Vec<LobInstance>,
}

impl ScanSink for Collect {
    fn singleinstance(&mut self, row: SingleInstanceRow) -> io::Result<()> {
        self.si.push(row);
        Ok(())
    }
    fn lob_instance(&mut self, lob: LobInstance) -> io::Result<()> {
        self.lobs.push(lob);
        Ok(())
    }
}

fn scan_split(dump: &[u8], mut next_len: impl FnMut() -> usize) -> (DumpFindings, Collect) {
    let mut sc = Scanner::new(Collect::default());
    let mut rest = dump;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(next_len().clamp(1, rest.len()));
        sc.feed(chunk).unwrap();
        rest = tail;
    }
    sc.finish().unwrap()
}

fn scan(dump: &[u8]) -> (DumpFindings, Collect) {
    scan_split(dump, || usize::MAX)
}

/// Scans whole, in every chunk size 1..=9 and at random split points,
/// and insists on identical results.
fn scan_all_ways(dump: &[u8]) -> (DumpFindings, Collect) {
    let whole = scan(dump);
    for n in 1..=9 {
        assert_eq!(scan_split(dump, || n), whole, "chunk size {n}");
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20 {
        let got = scan_split(dump, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 300) as usize
        });
        assert_eq!(got, whole, "random split");
    }
    whole
}

fn si(instanceid: u32, hierarchyid: u32, tag: u16, filename: Option<&str>) -> SingleInstanceRow {
    let filename = filename.map(str::to_owned);
    SingleInstanceRow {
        instanceid,
        hierarchyid,
        tag,
        filename,
    }
}

fn lob(instanceid: u32, tag: u16, chunks: u32, bytes: u64, gap_free: bool) -> LobInstance {
    LobInstance {
        instanceid,
        tag,
        chunks,
        bytes,
        gap_free,
    }
}

fn counts(f: &DumpFindings) -> String {
    let parts: Vec<String> = f
        .row_counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.join(" ")
}

fn version(f: &DumpFindings) -> String {
    f.kopano_version.map(|v| v.to_string()).unwrap_or_default()
}

const REAL_DUMP: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mariadb-10.11-kopano-sample.sql"
));

#[test]
fn real_mariadb_dump() {
    let (f, c) = scan_all_ways(REAL_DUMP);
    let expected = "audit=0 empty one=0 hierarchy=60 lob=18 properties=2 settings=3 singleinstances=35 versions=3";
    assert_eq!(counts(&f), expected);
    assert_eq!(f.attachment_storage.as_deref(), Some("files_v2"));
    assert_eq!(
        f.server_guid.as_deref(),
        Some("00112233445566778899aabbccddeeff")
    );
    assert_eq!(version(&f), "11.0.2.51 (database revision 120)");
    assert!(f.trailer_seen);
    assert_eq!((f.singleinstance_rows, c.si.len()), (35, 35));
    assert_eq!(
        c.si[..3],
        [
            si(1, 10, 14081, None),
            si(2, 11, 14081, None),
            si(3, 12, 26508, Some("ab/cd/0123456789abcdef"))
        ]
    );
    assert_eq!(c.si[4], si(10, 110, 14081, Some("f/10/it's \"q\" ),( ;")));
    let lobs = [
        lob(5, 14081, 3, 5, true),
        lob(6, 14081, 3, 3, false),
        lob(7, 14081, 10, 12000, true),
        lob(7, 26508, 1, 1, true),
        lob(8, 14081, 1, 0, true),
    ];
    assert_eq!((f.lob_instances, c.lobs.as_slice()), (5, &lobs[..]));
}

/// Old mysqldump style: one line per INSERT, several per table.
const NASTY: &str = r#"-- MySQL dump 10.13  Distrib 5.7.42, for Linux (x86_64)
/*!40101 SET NAMES utf8mb4 */;
--
-- Table structure for table `properties`
--
CREATE TABLE `properties` (
  `hierarchyid` int(11) unsigned NOT NULL DEFAULT 0,
  `tag` smallint(6) unsigned NOT NULL,
  `val_string` longtext,
  `val_binary` longblob,
  PRIMARY KEY (`hierarchyid`,`tag`)
) ENGINE=InnoDB;
LOCK TABLES `properties` WRITE;
/*!40000 ALTER TABLE `properties` DISABLE KEYS */;
INSERT INTO `properties` VALUES (1,1,'it\'s a \\ \"test\" \n with ),( and ; -- and /* no */ INSERT INTO `singleinstances` VALUES (1,2,3,\'x\'); CREATE TABLE `evil` (`a` int);\n-- Dump completed on 2020\nünïcødé 🎉 \0 \Z \t',0x00FF),(1,2,'a''b''''',''),(1,3,'
-- Dump completed
INSERT INTO `singleinstances` VALUES (7,7,7,NULL);
CREATE TABLE `evil2` (`a` int);
/*','*/'),(1,4,'\\\'',NULL);
INSERT INTO `properties` VALUES (1,5,"dq \" '' ),(",NULL);
/*!40000 ALTER TABLE `properties` ENABLE KEYS */;
UNLOCK TABLES;
CREATE TABLE `singleinstances` (
  `instanceid` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `hierarchyid` int(11) unsigned NOT NULL DEFAULT 0,
  `tag` smallint(6) unsigned NOT NULL DEFAULT 0,
  `filename` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`instanceid`,`hierarchyid`,`tag`),
  UNIQUE KEY `hkey` (`hierarchyid`,`tag`)
) ENGINE=InnoDB;
INSERT INTO `singleinstances` VALUES (1,2,14081,NULL),(2,3,14081,''),(3,4,26508,'d\'ir/ü'),(4294967295,5,65535,'x''y');
CREATE TABLE `settings` (`name` varchar(185) BINARY NOT NULL, `value` blob NOT NULL, PRIMARY KEY (`name`));
INSERT INTO `settings` VALUES ('attachment_storage',0x6461746162617365),('server_guid',0xA1B2C3D4E5F60718293A4B5C6D7E8F90),('x','');
CREATE TABLE `versions` (`major` int, `minor` int, `micro` int, `revision` int, `databaserevision` int, `updatetime` datetime);
INSERT INTO `versions` VALUES (8,7,80,1,70,'2019-01-01 00:00:00'),(10,0,1,0,110,'2020-01-01'),(8,7,81,0,70,NULL);
INSERT INTO `versions` VALUES (9,9,9,9,9,'2021-01-01');
CREATE TABLE `lob` (`instanceid` int, `chunkid` smallint, `tag` smallint, `val_binary` longblob, PRIMARY KEY (`instanceid`,`tag`,`chunkid`));
INSERT INTO `lob` VALUES (1,0,14081,0x0102),(1,1,14081,''),(1,2,14081,'a\'\\b'),(2,0,14081,0x010);
INSERT INTO `lob` VALUES (2,1,14081,NULL),(3,0,14081,0xAA),(3,1,14081,0xBB),(3,3,14081,0xCC);
CREATE TABLE `zero` (`a` int);
-- Dump completed on 2024-01-01 10:00:00
"#;

#[test]
fn nasty_dump_in_every_split() {
    let (f, c) = scan_all_ways(NASTY.as_bytes());
    let expected = "lob=8 properties=5 settings=3 singleinstances=4 versions=4 zero=0";
    assert_eq!(counts(&f), expected);
    let rows = [
        si(1, 2, 14081, None),
        si(2, 3, 14081, None),
        si(3, 4, 26508, Some("d'ir/ü")),
        si(4294967295, 5, 65535, Some("x'y")),
    ];
    assert_eq!((f.singleinstance_rows, c.si.as_slice()), (4, &rows[..]));
    assert_eq!(f.attachment_storage.as_deref(), Some("database"));
    assert_eq!(
        f.server_guid.as_deref(),
        Some("a1b2c3d4e5f60718293a4b5c6d7e8f90")
    );
    assert_eq!(version(&f), "10.0.1.0 (database revision 110)");
    // 'a\'\\b' is 4 bytes; 0x010 is 0x0010, two bytes.
    let lobs = [
        lob(1, 14081, 3, 6, true),
        lob(2, 14081, 2, 2, true),
        lob(3, 14081, 3, 3, false),
    ];
    assert_eq!((f.lob_instances, c.lobs.as_slice()), (3, &lobs[..]));
    assert!(f.trailer_seen);
}

#[test]
fn trailer_only_as_a_line_outside_strings() {
    let cut = NASTY.rfind("-- Dump completed on 2024").unwrap();
    assert!(!scan(&NASTY.as_bytes()[..cut]).0.trailer_seen);
    assert!(scan(b"SELECT 1;\n-- Dump completed\n").0.trailer_seen);
    assert!(scan(b"-- Dump completed").0.trailer_seen);
    for text in [
        "SELECT 1; -- Dump completed\n",
        " -- Dump completed\n",
        "--Dump completed\n",
        "/*\n-- Dump completed */",
        "INSERT INTO `t` VALUES (1,\n  -- Dump completed\n2);",
    ] {
        assert!(!scan(text.as_bytes()).0.trailer_seen, "{text:?}");
    }
}

#[test]
fn delimiter_blocks_are_not_data() {
    let dump = "CREATE TABLE `singleinstances` (`instanceid` int, `hierarchyid` int, `tag` int, `filename` varchar(255));
DELIMITER ;;
CREATE PROCEDURE `p`() BEGIN SELECT ';;'; INSERT INTO `singleinstances` VALUES (9,9,9,'p'); END ;;
/*!50003 CREATE*/ /*!50003 TRIGGER `t` AFTER INSERT ON `x` FOR EACH ROW BEGIN
  INSERT INTO `singleinstances` VALUES (8,8,8,'t');
END */;;
DELIMITER ;
INSERT INTO `singleinstances` VALUES (1,1,1,'real');
DELIMITER $$
CREATE PROCEDURE `q`() BEGIN SET @a=1; INSERT INTO `singleinstances` VALUES (7,7,7,'q'); END$$
DELIMITER ;
INSERT INTO `singleinstances` VALUES (2,2,2,NULL);
";
    let (f, c) = scan_all_ways(dump.as_bytes());
    assert_eq!(f.row_counts["singleinstances"], 2);
    assert_eq!(c.si, [si(1, 1, 1, Some("real")), si(2, 2, 2, None)]);
}

#[test]
fn columns_come_from_create_table() {
    let dump = "CREATE TABLE `singleinstances` (
  `filename` varchar(255) DEFAULT NULL,
  KEY `k` (`instanceid`),
  `tag` smallint(6) unsigned NOT NULL DEFAULT 0,
  CONSTRAINT `c` CHECK (`tag` > 0),
  `hierarchyid` int(11) unsigned NOT NULL DEFAULT 0,
  `instanceid` int(11) unsigned NOT NULL,
  PRIMARY KEY (`instanceid`,`hierarchyid`,`tag`)
);
INSERT INTO `singleinstances` VALUES ('f',3,2,1);
INSERT INTO `singleinstances` (`instanceid`,`tag`,`hierarchyid`) VALUES (4,6,5);
INSERT INTO `lob` VALUES (1,0,14081,0x00);
CREATE TABLE `we``ird` (`a` int);
INSERT INTO `we``ird` VALUES (1),(2);
";
    let (f, c) = scan_all_ways(dump.as_bytes());
    assert_eq!(c.si, [si(1, 2, 3, Some("f")), si(4, 5, 6, None)]);
    // No CREATE TABLE for `lob`: counted, not interpreted.
    assert_eq!((f.row_counts["lob"], f.lob_instances), (1, 0));
    assert_eq!(f.row_counts["we`ird"], 2);
}

#[test]
fn oversized_values_are_dropped_not_kept() {
    let long = "a".repeat(FILENAME_CAP + 1);
    let setting = "41".repeat(SETTING_CAP + 1);
    let dump = format!(
        "CREATE TABLE `singleinstances` (`instanceid` int, `hierarchyid` int, `tag` int, `filename` varchar(255));
INSERT INTO `singleinstances` VALUES (1,1,1,'{long}'),(2,2,2,'{ok}'),(3,3,70000,'x'),(4,NULL,1,'x');
CREATE TABLE `settings` (`name` varchar(185), `value` blob);
INSERT INTO `settings` VALUES ('attachment_storage',0x{setting}),('server_guid',0x01);",
        ok = &long[1..]
    );
    let (f, c) = scan(dump.as_bytes());
    assert_eq!(c.si, [si(1, 1, 1, None), si(2, 2, 2, Some(&long[1..]))]);
    assert_eq!(
        (f.row_counts["singleinstances"], f.singleinstance_rows),
        (4, 2)
    );
    assert_eq!(f.attachment_storage, None);
    assert_eq!(f.server_guid.as_deref(), Some("01"));
    assert!(!f.trailer_seen);
}

#[test]
fn other_literal_forms() {
    let dump = r#"CREATE TABLE `lob` (`instanceid` int, `chunkid` int, `tag` int, `val_binary` longblob);
INSERT INTO `lob` VALUES (1,0,1,_binary 'ab'),(1,1,1,X'0102'),(1,2,1,'\%'),(1,3,1,"dq"),(1,4,1,-1);
INSERT INTO `lob` VALUES (2,0,1,UNHEX('00')),(3,0,1,0x00);
CREATE TABLE `settings` (`name` varbinary(185), `value` blob);
INSERT INTO `settings` VALUES (0x7365727665725F67756964,x'ABCDEF'),('attachment_storage','files_v1-16-32');
"#;
    let (f, c) = scan_all_ways(dump.as_bytes());
    // The row whose data is an expression is counted but not read.
    assert_eq!(
        c.lobs,
        [lob(1, 1, 5, 2 + 2 + 2 + 2 + 2, true), lob(3, 1, 1, 1, true)]
    );
    assert_eq!(f.row_counts["lob"], 7);
    assert_eq!(f.server_guid.as_deref(), Some("abcdef"));
    assert_eq!(f.attachment_storage.as_deref(), Some("files_v1-16-32"));
}

#[test]
fn lob_key_that_reappears_is_emitted_again() {
    let dump =
        "CREATE TABLE `lob` (`instanceid` int, `chunkid` int, `tag` int, `val_binary` longblob);
INSERT INTO `lob` VALUES (1,0,1,0xAB),(2,0,1,0xCD),(1,1,1,0xEF),(1,1,1,'');";
    let (f, c) = scan(dump.as_bytes());
    let expected = [
        lob(1, 1, 1, 1, true),
        lob(2, 1, 1, 1, true),
        lob(1, 1, 2, 1, false),
    ];
    assert_eq!((f.lob_instances, c.lobs.as_slice()), (3, &expected[..]));
}

#[test]
fn malformed_input_never_panics() {
    let mut x = 12345u64;
    let mut bytes = NASTY.as_bytes().to_vec();
    for round in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x as usize) % bytes.len();
        if round % 2 == 0 {
            bytes[at] = b"'\\`();,-/*#x0\n"[(x >> 32) as usize % 14];
        }
        let (f, _) = scan_split(&bytes[..at], || (x % 17) as usize);
        assert!(f.row_counts.values().all(|&n| n < 100));
    }
    let (f, _) = scan(b"INSERT INTO `t` VALUES (1,'unterminated");
    assert_eq!(f.row_counts["t"], 0);
}

/// `cargo test --release --lib scanner_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn scanner_throughput() {
    let mut dump = String::from(
        "CREATE TABLE `lob` (`instanceid` int, `chunkid` int, `tag` int, `val_binary` longblob);\n\
         CREATE TABLE `properties` (`h` int, `t` int, `s` longtext, `b` longblob);\n",
    );
    let hex = "0123456789ABCDEF".repeat(4096);
    let text = "Hello, it\\'s a mail body \\\\ with escapes\\n and ünïcødé ".repeat(20);
    let mut id = 0;
    while dump.len() < 200_000_000 {
        id += 1;
        dump +=
            &format!("INSERT INTO `lob` VALUES ({id},0,14081,0x{hex}),({id},1,14081,0x{hex});\n");
        dump += "INSERT INTO `properties` VALUES ";
        for i in 0..100 {
            dump += &format!("({id},{i},'{text}',NULL),({id},{i},NULL,0x00FF),");
        }
        dump += "(0,0,NULL,NULL);\n";
    }
    dump += "-- Dump completed\n";
    let start = std::time::Instant::now();
    let (f, _) = scan_split(dump.as_bytes(), || 128 * 1024);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} MB in {secs:.2}s: {:.0} MB/s",
        dump.len() / 1_000_000,
        dump.len() as f64 / 1e6 / secs
    );
    assert!(f.trailer_seen && f.lob_instances > 0);
}
