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
#[path = "scanner_tests.rs"]
mod tests;
