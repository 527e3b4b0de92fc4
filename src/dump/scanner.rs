//! A streaming scanner for mysqldump/mariadb-dump output: it reads the SQL
//! text once, chunk by chunk, and records what the backup must prove from
//! the dump itself (row counts, attachment references, storage backend,
//! Kopano version, `lob` chunk totals). Memory stays flat.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use super::sql_lexer::{Decoded, Lexer, Lit, Text, Tok, TokenSink, Want, keyword};

/// One row of Kopano's `singleinstances` table: a reference to attachment data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SingleInstanceRow {
    pub instanceid: u32,
    pub hierarchyid: u32,
    pub tag: u16,
    /// files_v2: directory of the data, relative to attachment_path; else empty/NULL.
    pub filename: Option<String>,
}

/// The attachment data of one instance in the `lob` table (database backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LobInstance {
    pub instanceid: u32,
    pub tag: u16,
    /// Number of chunk rows seen.
    pub chunks: u32,
    /// Sum of the chunks' data lengths in bytes.
    pub bytes: u64,
    /// True when the chunk ids were exactly 0..chunks-1 (no gap, no duplicate).
    pub gap_free: bool,
}

/// A row of the `versions` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KopanoVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    pub revision: u32,
    pub databaserevision: u32,
}

impl std::fmt::Display for KopanoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{} (database revision {})",
            self.major, self.minor, self.micro, self.revision, self.databaserevision
        )
    }
}

/// Receives the potentially large, per-row findings as they stream past, so
/// that the scanner itself never accumulates them.
pub trait ScanSink {
    fn singleinstance(&mut self, row: SingleInstanceRow) -> std::io::Result<()>;
    fn lob_instance(&mut self, lob: LobInstance) -> std::io::Result<()>;
}

/// The small findings, kept in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFindings {
    /// Every table the dump creates, with the number of rows it inserts.
    pub row_counts: BTreeMap<String, u64>,
    /// `settings.attachment_storage` as stored in the database.
    pub attachment_storage: Option<String>,
    /// `settings.server_guid`, as lower-case hex.
    pub server_guid: Option<String>,
    /// The greatest `versions` row.
    pub kopano_version: Option<KopanoVersion>,
    /// Number of `singleinstances` rows passed to the sink.
    pub singleinstance_rows: u64,
    /// Number of `lob` instances passed to the sink.
    pub lob_instances: u64,
    /// The dump ended with mysqldump's `-- Dump completed` trailer.
    pub trailer_seen: bool,
}

/// Kopano tables whose rows the scanner reads; all others are only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SingleInstances,
    Settings,
    Versions,
    Lob,
    Other,
}

/// What a column's value is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ignore,
    /// An unsigned number kept in `Row::nums[slot]`.
    Num(u8),
    /// `settings.name`.
    Name,
    /// `singleinstances.filename` or `settings.value`.
    Text,
    /// `lob.val_binary`: only its length.
    Len,
}

impl Kind {
    fn of(table: &[u8]) -> Kind {
        match table {
            b"singleinstances" => Kind::SingleInstances,
            b"settings" => Kind::Settings,
            b"versions" => Kind::Versions,
            b"lob" => Kind::Lob,
            _ => Kind::Other,
        }
    }

    fn role(self, column: &[u8]) -> Role {
        let c = column.to_ascii_lowercase();
        match (self, c.as_slice()) {
            (Kind::SingleInstances | Kind::Lob, b"instanceid") => Role::Num(0),
            (Kind::SingleInstances, b"hierarchyid") | (Kind::Lob, b"chunkid") => Role::Num(1),
            (Kind::SingleInstances | Kind::Lob, b"tag") => Role::Num(2),
            (Kind::SingleInstances, b"filename") | (Kind::Settings, b"value") => Role::Text,
            (Kind::Settings, b"name") => Role::Name,
            (Kind::Lob, b"val_binary") => Role::Len,
            (Kind::Versions, b"major") => Role::Num(0),
            (Kind::Versions, b"minor") => Role::Num(1),
            (Kind::Versions, b"micro") => Role::Num(2),
            (Kind::Versions, b"revision") => Role::Num(3),
            (Kind::Versions, b"databaserevision") => Role::Num(4),
            _ => Role::Ignore,
        }
    }

    /// Longest decoded value kept for a text column; longer ones make the
    /// value unusable instead of growing memory.
    fn text_cap(self) -> usize {
        match self {
            Kind::Settings => SETTING_CAP,
            _ => FILENAME_CAP,
        }
    }
}

const NAME_CAP: usize = 256;
/// What the parser wants outside of rows: keywords and names.
const STATEMENT: Want = Want::Tokens(NAME_CAP);
const FILENAME_CAP: usize = 4096;
const SETTING_CAP: usize = 64 * 1024;
/// MySQL's own limit; protects memory against a malformed column list.
const MAX_COLUMNS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Skip,
    InsHead,
    InsName,
    InsCols,
    InsValues,
    Tuple,
    CreateHead,
    CreateName,
    CreateAfterName,
    CreateCols,
}

/// The needed columns of the tuple being read.
#[derive(Debug, Default)]
struct Row {
    nums: [Option<u64>; 5],
    name: Vec<u8>,
    name_val: Option<Decoded>,
    text: Vec<u8>,
    text_val: Option<Decoded>,
    len: u64,
    /// An expression where a literal was expected: the row is not read.
    complex: bool,
    /// `X'..'`: the string that follows is hex.
    x_prefix: bool,
}

struct Parser<S: ScanSink> {
    sink: S,
    f: DumpFindings,
    st: St,
    table: Vec<u8>,
    /// The last token was a `.`: a qualified name continues.
    dot: bool,
    kind: Kind,
    /// Column roles from each table kind's CREATE TABLE, by `Kind as usize`.
    schemas: [Vec<Role>; 5],
    /// Roles of the statement at hand (from the schema or the INSERT's column list).
    roles: Vec<Role>,
    explicit_cols: bool,
    interesting: bool,
    depth: u32,
    col: usize,
    elem_start: bool,
    val_want: Want,
    in_insert: bool,
    ins_rows: u64,
    row: Row,
    lob: Option<LobInstance>,
}

impl<S: ScanSink> Parser<S> {
    fn register(&mut self) -> &mut u64 {
        let name = String::from_utf8_lossy(&self.table).into_owned();
        self.f.row_counts.entry(name).or_insert(0)
    }

    fn set_table(&mut self, t: &Text<'_>, bare: bool) {
        // A bare `db.table` names the table after the last dot.
        let b = match t.bytes.iter().rposition(|&c| c == b'.') {
            Some(p) if bare => &t.bytes[p + 1..],
            _ => t.bytes,
        };
        self.table.clear();
        self.table.extend_from_slice(b);
        self.dot = false;
    }

    fn end_statement(&mut self) {
        if std::mem::take(&mut self.in_insert) {
            let n = self.ins_rows;
            *self.register() += n;
        }
        self.st = St::Start;
    }

    fn role(&self) -> Role {
        self.roles.get(self.col).copied().unwrap_or(Role::Ignore)
    }

    fn want_for_col(&self) -> Want {
        if !self.interesting {
            return Want::Structure;
        }
        Want::Tokens(match self.role() {
            Role::Ignore | Role::Len => 0,
            Role::Num(_) => WORD_CAP,
            // Room for the hex digits of a value of the cap's length.
            Role::Name => 2 * NAME_CAP + 2,
            Role::Text => 2 * self.kind.text_cap() + 2,
        })
    }

    fn start_values(&mut self) {
        self.kind = Kind::of(&self.table);
        if !self.explicit_cols {
            self.roles.clear();
            self.roles
                .extend_from_slice(&self.schemas[self.kind as usize]);
        }
        self.interesting =
            self.kind != Kind::Other && self.roles.iter().any(|r| *r != Role::Ignore);
        self.in_insert = true;
        self.ins_rows = 0;
        self.st = St::InsValues;
    }

    fn value_token(&mut self, tok: Tok<'_>) {
        let role = self.role();
        let row = &mut self.row;
        let Some(lit) = Lit::of(tok, &mut row.x_prefix) else {
            return;
        };
        match role {
            Role::Ignore => {}
            _ if matches!(lit, Lit::Expr) => row.complex = true,
            Role::Num(slot) => row.nums[usize::from(slot)] = lit.as_u64(),
            Role::Name => row.name_val = Some(lit.decode_into(&mut row.name, NAME_CAP)),
            Role::Text => row.text_val = Some(lit.decode_into(&mut row.text, self.kind.text_cap())),
            Role::Len => row.len = lit.byte_len(),
        }
    }

    fn tuple_token(&mut self, tok: Tok<'_>) -> io::Result<Want> {
        match tok {
            Tok::Comma if self.depth == 1 => {
                self.col += 1;
                self.row.x_prefix = false;
                self.val_want = self.want_for_col();
            }
            Tok::Close if self.depth == 1 => {
                self.ins_rows += 1;
                self.st = St::InsValues;
                if self.interesting && !self.row.complex {
                    self.finish_row()?;
                }
                return Ok(STATEMENT);
            }
            Tok::Close => self.depth -= 1,
            Tok::Open => {
                if self.depth == 1 && self.interesting && self.role() != Role::Ignore {
                    self.row.complex = true;
                }
                self.depth += 1;
            }
            Tok::End => {
                self.end_statement();
                return Ok(STATEMENT);
            }
            _ if self.depth == 1 && self.interesting => self.value_token(tok),
            _ => {}
        }
        Ok(self.val_want)
    }

    fn finish_row(&mut self) -> io::Result<()> {
        let row = &self.row;
        let [a, b, c, d, e] = row.nums;
        let u32_of = |v: Option<u64>| v.and_then(|v| u32::try_from(v).ok());
        match self.kind {
            Kind::SingleInstances => {
                let (Some(instanceid), Some(hierarchyid), Some(tag)) =
                    (u32_of(a), u32_of(b), c.and_then(|v| u16::try_from(v).ok()))
                else {
                    return Ok(());
                };
                let filename = match row.text_val {
                    Some(Decoded::Ok) if !row.text.is_empty() => {
                        Some(String::from_utf8_lossy(&row.text).into_owned())
                    }
                    _ => None,
                };
                self.sink.singleinstance(SingleInstanceRow {
                    instanceid,
                    hierarchyid,
                    tag,
                    filename,
                })?;
                self.f.singleinstance_rows += 1;
            }
            Kind::Settings => {
                if row.name_val != Some(Decoded::Ok) || row.text_val != Some(Decoded::Ok) {
                    return Ok(());
                }
                match row.name.as_slice() {
                    b"attachment_storage" => {
                        self.f.attachment_storage =
                            Some(String::from_utf8_lossy(&row.text).into_owned())
                    }
                    b"server_guid" => self.f.server_guid = Some(hex::encode(&row.text)),
                    _ => {}
                }
            }
            Kind::Versions => {
                if let (
                    Some(major),
                    Some(minor),
                    Some(micro),
                    Some(revision),
                    Some(databaserevision),
                ) = (u32_of(a), u32_of(b), u32_of(c), u32_of(d), u32_of(e))
                {
                    let v = KopanoVersion {
                        major,
                        minor,
                        micro,
                        revision,
                        databaserevision,
                    };
                    self.f.kopano_version = self.f.kopano_version.max(Some(v));
                }
            }
            Kind::Lob => {
                let (Some(instanceid), Some(chunk), Some(tag)) =
                    (u32_of(a), b, c.and_then(|v| u16::try_from(v).ok()))
                else {
                    return Ok(());
                };
                let len = row.len;
                match &mut self.lob {
                    Some(cur) if cur.instanceid == instanceid && cur.tag == tag => {
                        // Rows come in key order, so a gap-free instance counts up from 0.
                        cur.gap_free &= chunk == u64::from(cur.chunks);
                        cur.chunks = cur.chunks.saturating_add(1);
                        cur.bytes = cur.bytes.saturating_add(len);
                    }
                    _ => {
                        self.flush_lob()?;
                        self.lob = Some(LobInstance {
                            instanceid,
                            tag,
                            chunks: 1,
                            bytes: len,
                            gap_free: chunk == 0,
                        });
                    }
                }
            }
            Kind::Other => {}
        }
        Ok(())
    }

    fn flush_lob(&mut self) -> io::Result<()> {
        if let Some(lob) = self.lob.take() {
            self.sink.lob_instance(lob)?;
            self.f.lob_instances += 1;
        }
        Ok(())
    }
}

/// Numbers fit in this; anything longer is not a number we need.
const WORD_CAP: usize = 32;

impl<S: ScanSink> TokenSink for Parser<S> {
    fn token(&mut self, tok: Tok<'_>) -> io::Result<Want> {
        if self.st == St::Tuple {
            return self.tuple_token(tok);
        }
        if let Tok::End = tok {
            self.end_statement();
            return Ok(STATEMENT);
        }
        let is_dot = matches!(tok, Tok::Word(t) if t.bytes == b".");
        match (self.st, tok) {
            (St::Start, Tok::Word(t)) if keyword(&t, "INSERT") || keyword(&t, "REPLACE") => {
                self.explicit_cols = false;
                self.st = St::InsHead;
            }
            (St::Start, Tok::Word(t)) if keyword(&t, "CREATE") => self.st = St::CreateHead,
            (St::InsHead, Tok::Word(t))
                if ["INTO", "IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY"]
                    .iter()
                    .any(|k| keyword(&t, k)) => {}
            (St::InsHead, Tok::Word(t)) => {
                self.set_table(&t, true);
                self.st = St::InsName;
            }
            (St::InsHead, Tok::Ident(t) | Tok::Str(t)) => {
                self.set_table(&t, false);
                self.st = St::InsName;
            }
            (St::InsName | St::CreateAfterName, _) if is_dot => self.dot = true,
            (St::InsName | St::CreateAfterName, Tok::Ident(t) | Tok::Str(t)) if self.dot => {
                self.set_table(&t, false)
            }
            (St::InsName, Tok::Word(t)) if keyword(&t, "VALUES") || keyword(&t, "VALUE") => {
                self.start_values()
            }
            (St::InsName, Tok::Open) if !self.explicit_cols => {
                self.kind = Kind::of(&self.table);
                self.roles.clear();
                self.explicit_cols = true;
                self.st = St::InsCols;
            }
            (St::InsCols, Tok::Ident(t) | Tok::Word(t)) => {
                if self.roles.len() < MAX_COLUMNS {
                    self.roles.push(self.kind.role(t.bytes));
                }
            }
            (St::InsCols, Tok::Comma) => {}
            (St::InsCols, Tok::Close) => self.st = St::InsName,
            (St::InsValues, Tok::Open) => {
                self.st = St::Tuple;
                self.depth = 1;
                self.col = 0;
                let row = &mut self.row;
                (row.nums, row.name_val, row.text_val) = ([None; 5], None, None);
                (row.len, row.complex, row.x_prefix) = (0, false, false);
                self.val_want = self.want_for_col();
                return Ok(self.val_want);
            }
            (St::InsValues, Tok::Comma) => {}
            (St::CreateHead, Tok::Word(t)) if keyword(&t, "TABLE") => self.st = St::CreateName,
            (St::CreateHead, Tok::Word(t))
                if keyword(&t, "OR") || keyword(&t, "REPLACE") || keyword(&t, "TEMPORARY") => {}
            (St::CreateName, Tok::Word(t))
                if keyword(&t, "IF") || keyword(&t, "NOT") || keyword(&t, "EXISTS") => {}
            (St::CreateName, Tok::Word(t)) => {
                self.set_table(&t, true);
                self.st = St::CreateAfterName;
            }
            (St::CreateName, Tok::Ident(t) | Tok::Str(t)) => {
                self.set_table(&t, false);
                self.st = St::CreateAfterName;
            }
            (St::CreateAfterName, tok) => {
                self.register();
                self.kind = Kind::of(&self.table);
                self.roles.clear();
                self.st = St::Skip;
                if let Tok::Open = tok {
                    self.depth = 1;
                    self.elem_start = true;
                    self.st = St::CreateCols;
                }
            }
            (St::CreateCols, tok) => self.create_col_token(tok),
            (St::Skip, _) => {}
            _ => self.st = St::Skip,
        }
        Ok(STATEMENT)
    }
}

impl<S: ScanSink> Parser<S> {
    fn create_col_token(&mut self, tok: Tok<'_>) {
        let elem_start = std::mem::take(&mut self.elem_start);
        match tok {
            Tok::Open => self.depth += 1,
            Tok::Close => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.schemas[self.kind as usize] = std::mem::take(&mut self.roles);
                    self.st = St::Skip;
                }
            }
            Tok::Comma => self.elem_start = self.depth == 1,
            // Keys and constraints start with a keyword; columns with their name.
            Tok::Ident(t) | Tok::Word(t) if elem_start && self.roles.len() < MAX_COLUMNS => {
                let keyword = matches!(tok, Tok::Word(_))
                    && [
                        "PRIMARY",
                        "KEY",
                        "INDEX",
                        "UNIQUE",
                        "CONSTRAINT",
                        "FOREIGN",
                        "FULLTEXT",
                        "SPATIAL",
                        "CHECK",
                        "PERIOD",
                    ]
                    .iter()
                    .any(|k| keyword(&t, k));
                if !keyword {
                    self.roles.push(self.kind.role(t.bytes));
                }
            }
            _ => {}
        }
    }
}

/// Streams a dump through the [`sql_lexer`](super::sql_lexer) and reads the
/// few Kopano tables the backup must prove things about.
///
/// Behaviour where the dump leaves room:
/// - Only `INSERT`/`REPLACE ... VALUES` at statement level are data;
///   comments (versioned `/*!...*/` ones too) and everything inside
///   `DELIMITER` blocks (routines, triggers, events) are not. A table's
///   columns come from its `CREATE TABLE`, or from the INSERT's column list.
///   Rows of a table with neither are counted, not read.
/// - `filename` is `None` for NULL, `''`, and a value over 4096 bytes; it
///   is decoded lossily from UTF-8.
/// - A row whose key columns are not plain unsigned numbers in range (or are
///   expressions) is counted in `row_counts` but not passed on, so a
///   consumer can compare `row_counts["singleinstances"]` with
///   `singleinstance_rows`.
/// - `settings` values over 64 KiB are ignored; `server_guid` is reported
///   as whatever bytes are stored, whatever their number.
/// - `lob` chunks are aggregated over consecutive rows with the same
///   (instanceid, tag), across INSERT statements; a key that comes back
///   after another is emitted again, for the consumer to merge. `gap_free`
///   expects ascending chunk ids, as the primary-key order gives them.
/// - Backslash escapes are decoded as in MySQL's default `sql_mode`
///   (mysqldump's own); `NO_BACKSLASH_ESCAPES` dumps are not supported.
/// - An error from the sink is returned at once; the scanner is then unusable.
pub struct Scanner<S: ScanSink> {
    lexer: Lexer,
    parser: Parser<S>,
}

impl<S: ScanSink> Scanner<S> {
    pub fn new(sink: S) -> Self {
        Scanner {
            lexer: Lexer::new(),
            parser: Parser {
                sink,
                f: DumpFindings::default(),
                st: St::Start,
                table: Vec::new(),
                dot: false,
                kind: Kind::Other,
                schemas: Default::default(),
                roles: Vec::new(),
                explicit_cols: false,
                interesting: false,
                depth: 0,
                col: 0,
                elem_start: false,
                val_want: Want::Structure,
                in_insert: false,
                ins_rows: 0,
                row: Row::default(),
                lob: None,
            },
        }
    }

    /// Feeds the next chunk of the dump; chunks may split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.lexer.feed(chunk, &mut self.parser)
    }

    /// End of input: flushes the pending `lob` instance and returns the
    /// findings and the sink.
    pub fn finish(mut self) -> io::Result<(DumpFindings, S)> {
        self.lexer.finish(&mut self.parser)?;
        self.parser.flush_lob()?;
        let mut f = self.parser.f;
        f.trailer_seen = self.lexer.trailer_seen();
        Ok((f, self.parser.sink))
    }
}

#[cfg(test)]
mod tests {
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

    fn si(
        instanceid: u32,
        hierarchyid: u32,
        tag: u16,
        filename: Option<&str>,
    ) -> SingleInstanceRow {
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
        let dump = "CREATE TABLE `lob` (`instanceid` int, `chunkid` int, `tag` int, `val_binary` longblob);
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
            dump += &format!(
                "INSERT INTO `lob` VALUES ({id},0,14081,0x{hex}),({id},1,14081,0x{hex});\n"
            );
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
}
