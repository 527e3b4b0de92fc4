//! Byte-level tokenizer for mysqldump/mariadb-dump output, fed in chunks that
//! may split anywhere. It follows the mysql client's lexical rules just far
//! enough (strings, identifiers, comments, `DELIMITER`) to find statements
//! and values, and keeps a token's text only up to a limit the consumer sets.

use std::io;

use memchr::{memchr, memchr2};

/// Words are always kept this far, so keywords and numbers can be read
/// even where the consumer wants no text.
const WORD_MIN_CAPTURE: usize = 32;
/// The mysql client takes any delimiter; longer ones are ignored here.
const MAX_DELIM: usize = 16;
/// mysqldump's last line, after the `--` that opens it.
const TRAILER: &[u8] = b" Dump completed";
const NO_MATCH: u8 = u8::MAX;

/// A token's text: `bytes` is at most the capture limit long, `len` is the
/// full length (decoded, for strings and identifiers).
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub bytes: &'a [u8],
    pub len: u64,
}

impl Text<'_> {
    pub fn complete(&self) -> bool {
        self.len == self.bytes.len() as u64
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Tok<'a> {
    /// An unquoted run: keyword, number, `NULL`, `0x...` hex literal.
    Word(Text<'a>),
    /// A backtick-quoted identifier, unescaped.
    Ident(Text<'a>),
    /// A quoted string, escapes decoded.
    Str(Text<'a>),
    Open,
    Close,
    Comma,
    /// End of a statement: the delimiter, a `DELIMITER` line, end of input.
    End,
    /// Any other punctuation byte.
    Other(u8),
}

/// What the consumer wants to see of the tokens that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Every token, with text kept up to this many bytes.
    Tokens(usize),
    /// Only parentheses, strings (without text) and the statement end:
    /// words and commas pass unseen, which makes skipping rows cheap.
    Structure,
}

pub trait TokenSink {
    fn token(&mut self, tok: Tok<'_>) -> io::Result<Want>;
}

/// The literal a value's token stands for, as mysqldump writes values.
#[derive(Debug, Clone, Copy)]
pub enum Lit<'a> {
    Null,
    /// The digits of `0x..` or `X'..'`.
    Hex(Text<'a>),
    Str(Text<'a>),
    /// Any other word; a number, normally.
    Word(Text<'a>),
    /// Punctuation: part of an expression, not a literal.
    Expr,
}

/// Result of decoding a literal into a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Null,
    Ok,
    /// Too long for the buffer's cap, or not decodable.
    Bad,
}

pub fn keyword(t: &Text<'_>, word: &str) -> bool {
    t.bytes.eq_ignore_ascii_case(word.as_bytes())
}

impl<'a> Lit<'a> {
    /// Classifies one token of a value. `None` for a prefix whose literal
    /// follows (`X'..'`, a charset introducer like `_binary`); `hex_next`
    /// carries the `X` to the next token.
    pub fn of(tok: Tok<'a>, hex_next: &mut bool) -> Option<Lit<'a>> {
        Some(match tok {
            Tok::Word(t) if keyword(&t, "NULL") => Lit::Null,
            Tok::Word(t) if t.bytes.starts_with(b"0x") || t.bytes.starts_with(b"0X") => {
                Lit::Hex(Text {
                    bytes: &t.bytes[2..],
                    len: t.len - 2,
                })
            }
            Tok::Word(t) if keyword(&t, "X") => {
                *hex_next = true;
                return None;
            }
            Tok::Word(t) if t.bytes.starts_with(b"_") => return None,
            Tok::Word(t) => Lit::Word(t),
            Tok::Str(t) if std::mem::take(hex_next) => Lit::Hex(t),
            Tok::Str(t) => Lit::Str(t),
            _ => Lit::Expr,
        })
    }

    pub fn as_u64(&self) -> Option<u64> {
        let (Lit::Word(t) | Lit::Str(t)) = self else {
            return None;
        };
        if !t.complete() || t.bytes.is_empty() || t.bytes.len() > 20 {
            return None;
        }
        t.bytes.iter().try_fold(0u64, |acc, &b| {
            let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
            acc.checked_mul(10)?.checked_add(u64::from(d))
        })
    }

    /// Length in bytes of the value the literal denotes (0 for NULL).
    pub fn byte_len(&self) -> u64 {
        match self {
            Lit::Null | Lit::Expr => 0,
            Lit::Hex(t) => t.len.div_ceil(2),
            Lit::Str(t) | Lit::Word(t) => t.len,
        }
    }

    /// Decodes the value into `out` if it is at most `cap` bytes long.
    pub fn decode_into(&self, out: &mut Vec<u8>, cap: usize) -> Decoded {
        out.clear();
        match self {
            Lit::Null => Decoded::Null,
            Lit::Hex(t) if t.complete() && self.byte_len() <= cap as u64 => unhex(t.bytes, out),
            Lit::Str(t) | Lit::Word(t) if t.complete() && t.bytes.len() <= cap => {
                out.extend_from_slice(t.bytes);
                Decoded::Ok
            }
            _ => Decoded::Bad,
        }
    }
}

/// Decodes hex digits as MySQL does: an odd count gets a leading zero.
fn unhex(digits: &[u8], out: &mut Vec<u8>) -> Decoded {
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let (head, rest) = digits.split_at(digits.len() % 2);
    for &d in head {
        match nibble(d) {
            Some(v) => out.push(v),
            None => return Decoded::Bad,
        }
    }
    for pair in rest.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return Decoded::Bad,
        }
    }
    Decoded::Ok
}

#[derive(Debug, Clone, Copy)]
enum TextKind {
    Word,
    Ident,
    Str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Bare,
    Str(u8),
    StrEsc(u8),
    /// Saw the closing quote; a second one would be an escaped quote.
    StrQuote(u8),
    Ident,
    IdentTick,
    Dash {
        line_start: bool,
    },
    DashDash {
        line_start: bool,
    },
    Slash,
    /// `matched`: bytes of [`TRAILER`] matched so far, or [`NO_MATCH`].
    LineComment {
        matched: u8,
    },
    Block,
    BlockStar,
    /// Matched this many bytes of a multi-byte delimiter.
    DelimMatch(u8),
    DelimCmdSpace,
    DelimCmdArg,
    DelimCmdRest,
}

const fn bare_table() -> [bool; 256] {
    let mut t = [true; 256];
    let mut b = 0;
    while b <= b' ' as usize {
        t[b] = false;
        b += 1;
    }
    let stops = b"'\"`(),;/#";
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = false;
        i += 1;
    }
    t
}
const BARE: [bool; 256] = bare_table();

/// Bytes that may matter in [`Want::Structure`] mode.
const fn structure_table() -> [bool; 256] {
    let mut t = [false; 256];
    let bytes = b"'\"`()/-#;\n";
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}
const STRUCTURE: [bool; 256] = structure_table();

/// Index of the first byte of `s` whose `table` entry is `STOP`, or
/// `s.len()`. Eight bytes are tested per branch: long hex literals and
/// skipped rows are where the time goes.
#[inline]
fn span<const STOP: bool>(s: &[u8], table: &[bool; 256]) -> usize {
    let mut i = 0;
    for block in s.chunks_exact(8) {
        if block
            .iter()
            .fold(false, |hit, &b| hit | (table[b as usize] == STOP))
        {
            break;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&b| table[b as usize] == STOP)
        .unwrap_or(s.len() - i)
}

pub struct Lexer {
    state: State,
    buf: Vec<u8>,
    len: u64,
    /// Capture limit the consumer asked for; `cap` is the current token's.
    limit: usize,
    cap: usize,
    delim: [u8; MAX_DELIM],
    delim_len: usize,
    new_delim: [u8; MAX_DELIM],
    new_delim_len: usize,
    structure_only: bool,
    /// BARE, minus the first byte of a custom delimiter so words stop there.
    bare: [bool; 256],
    /// STRUCTURE, plus the first byte of a custom delimiter.
    structure: [bool; 256],
    line_start: bool,
    stmt_fresh: bool,
    /// Replaying a partly matched delimiter: its first byte is ordinary.
    suppress_delim: bool,
    trailer_seen: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new()
    }
}

impl Lexer {
    pub fn new() -> Self {
        let mut delim = [0; MAX_DELIM];
        delim[0] = b';';
        Lexer {
            state: State::Normal,
            buf: Vec::new(),
            len: 0,
            limit: WORD_MIN_CAPTURE,
            cap: 0,
            delim,
            delim_len: 1,
            new_delim: [0; MAX_DELIM],
            new_delim_len: 0,
            structure_only: false,
            bare: BARE,
            structure: STRUCTURE,
            line_start: true,
            stmt_fresh: true,
            suppress_delim: false,
            trailer_seen: false,
        }
    }

    /// A line starting with `-- Dump completed` was seen outside any string.
    pub fn trailer_seen(&self) -> bool {
        self.trailer_seen
    }

    /// End of input: a statement left open ends here. Half-read tokens are
    /// dropped; none of them could complete a row.
    pub fn finish<T: TokenSink>(&mut self, sink: &mut T) -> io::Result<()> {
        self.state = State::Normal;
        self.end(sink)
    }

    fn begin(&mut self, cap: usize) {
        self.buf.clear();
        self.len = 0;
        self.cap = cap;
    }

    #[inline]
    fn push(&mut self, s: &[u8]) {
        self.len += s.len() as u64;
        let room = self.cap.saturating_sub(self.buf.len());
        if room > 0 {
            self.buf.extend_from_slice(&s[..s.len().min(room)]);
        }
    }

    fn text(&self) -> Text<'_> {
        Text {
            bytes: &self.buf,
            len: self.len,
        }
    }

    fn emit<T: TokenSink>(&mut self, sink: &mut T, tok: Tok<'_>) -> io::Result<()> {
        self.want(sink.token(tok)?);
        self.stmt_fresh = false;
        Ok(())
    }

    fn emit_text<T: TokenSink>(&mut self, sink: &mut T, kind: TextKind) -> io::Result<()> {
        let t = self.text();
        let tok = match kind {
            TextKind::Word => Tok::Word(t),
            TextKind::Ident => Tok::Ident(t),
            TextKind::Str => Tok::Str(t),
        };
        self.want(sink.token(tok)?);
        self.stmt_fresh = false;
        Ok(())
    }

    fn want(&mut self, want: Want) {
        (self.limit, self.structure_only) = match want {
            Want::Tokens(limit) => (limit, false),
            Want::Structure => (0, true),
        };
    }

    fn end<T: TokenSink>(&mut self, sink: &mut T) -> io::Result<()> {
        self.emit(sink, Tok::End)?;
        self.stmt_fresh = true;
        Ok(())
    }

    fn end_word<T: TokenSink>(&mut self, sink: &mut T) -> io::Result<()> {
        if self.stmt_fresh && self.buf.eq_ignore_ascii_case(b"DELIMITER") {
            // A client command, not SQL: the rest of the line is its argument.
            self.new_delim_len = 0;
            self.state = State::DelimCmdSpace;
            return Ok(());
        }
        self.state = State::Normal;
        self.emit_text(sink, TextKind::Word)
    }

    fn set_delimiter(&mut self) {
        let n = self.new_delim_len;
        if n == 0 || n > MAX_DELIM {
            return;
        }
        self.delim = self.new_delim;
        self.delim_len = n;
        self.bare = BARE;
        self.bare[self.delim[0] as usize] = false;
        self.structure = STRUCTURE;
        self.structure[self.delim[0] as usize] = true;
    }

    /// Consumes a chunk.
    pub fn feed<T: TokenSink>(&mut self, input: &[u8], sink: &mut T) -> io::Result<()> {
        let n = input.len();
        let mut i = 0;
        while i < n {
            match self.state {
                State::Normal => {
                    if self.structure_only {
                        let skip = span::<true>(&input[i..], &self.structure);
                        if skip > 0 {
                            self.line_start = false;
                            i += skip;
                            continue;
                        }
                    }
                    let b = input[i];
                    if b <= b' ' {
                        self.line_start = b == b'\n';
                        i += 1;
                        continue;
                    }
                    let line_start = std::mem::replace(&mut self.line_start, false);
                    let suppress = std::mem::take(&mut self.suppress_delim);
                    if b == self.delim[0] && !suppress {
                        i += 1;
                        if self.delim_len == 1 {
                            self.end(sink)?;
                        } else {
                            self.state = State::DelimMatch(1);
                        }
                        continue;
                    }
                    match b {
                        b'\'' | b'"' => {
                            self.begin(self.limit);
                            self.state = State::Str(b);
                        }
                        b'`' => {
                            self.begin(self.limit);
                            self.state = State::Ident;
                        }
                        b'(' => self.emit(sink, Tok::Open)?,
                        b')' => self.emit(sink, Tok::Close)?,
                        b',' => self.emit(sink, Tok::Comma)?,
                        b'-' => self.state = State::Dash { line_start },
                        b'/' => self.state = State::Slash,
                        b'#' => self.state = State::LineComment { matched: NO_MATCH },
                        _ if self.bare[b as usize] => {
                            self.begin(self.limit.max(WORD_MIN_CAPTURE));
                            self.state = State::Bare;
                            continue;
                        }
                        _ => self.emit(sink, Tok::Other(b))?,
                    }
                    i += 1;
                }
                State::Bare => {
                    let run = span::<false>(&input[i..], &self.bare);
                    self.push(&input[i..i + run]);
                    i += run;
                    if i < n {
                        self.end_word(sink)?;
                    }
                }
                State::Str(q) => match memchr2(q, b'\\', &input[i..]) {
                    Some(p) => {
                        self.push(&input[i..i + p]);
                        i += p;
                        self.state = if input[i] == q {
                            State::StrQuote(q)
                        } else {
                            State::StrEsc(q)
                        };
                        i += 1;
                    }
                    None => {
                        self.push(&input[i..]);
                        i = n;
                    }
                },
                State::StrEsc(q) => {
                    let decoded = match input[i] {
                        b'0' => 0,
                        b'b' => 8,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'Z' => 26,
                        // Outside LIKE patterns MySQL keeps these backslashes.
                        b'%' => {
                            self.push(b"\\");
                            b'%'
                        }
                        b'_' => {
                            self.push(b"\\");
                            b'_'
                        }
                        other => other,
                    };
                    self.push(&[decoded]);
                    self.state = State::Str(q);
                    i += 1;
                }
                State::StrQuote(q) => {
                    if input[i] == q {
                        self.push(&[q]);
                        self.state = State::Str(q);
                        i += 1;
                    } else {
                        self.state = State::Normal;
                        self.emit_text(sink, TextKind::Str)?;
                    }
                }
                State::Ident => match memchr(b'`', &input[i..]) {
                    Some(p) => {
                        self.push(&input[i..i + p]);
                        self.state = State::IdentTick;
                        i += p + 1;
                    }
                    None => {
                        self.push(&input[i..]);
                        i = n;
                    }
                },
                State::IdentTick => {
                    if input[i] == b'`' {
                        self.push(b"`");
                        self.state = State::Ident;
                        i += 1;
                    } else {
                        self.state = State::Normal;
                        self.emit_text(sink, TextKind::Ident)?;
                    }
                }
                State::Dash { line_start } => {
                    if input[i] == b'-' {
                        self.state = State::DashDash { line_start };
                        i += 1;
                    } else {
                        self.begin(self.limit.max(WORD_MIN_CAPTURE));
                        self.push(b"-");
                        self.state = State::Bare;
                    }
                }
                State::DashDash { line_start } => {
                    let b = input[i];
                    // `--` opens a comment only before a space or control byte.
                    if b <= b' ' {
                        i += 1;
                        if b == b'\n' {
                            self.state = State::Normal;
                            self.line_start = true;
                        } else {
                            let matched = if line_start && b == b' ' { 1 } else { NO_MATCH };
                            self.state = State::LineComment { matched };
                        }
                    } else {
                        self.begin(self.limit.max(WORD_MIN_CAPTURE));
                        self.push(b"--");
                        self.state = State::Bare;
                    }
                }
                State::Slash => {
                    if input[i] == b'*' {
                        self.state = State::Block;
                        i += 1;
                    } else {
                        self.state = State::Normal;
                        self.emit(sink, Tok::Other(b'/'))?;
                    }
                }
                State::LineComment { matched } => {
                    if matched != NO_MATCH {
                        let m = matched as usize;
                        let next = if input[i] == TRAILER[m] {
                            i += 1;
                            if m + 1 == TRAILER.len() {
                                self.trailer_seen = true;
                                NO_MATCH
                            } else {
                                matched + 1
                            }
                        } else {
                            NO_MATCH
                        };
                        self.state = State::LineComment { matched: next };
                        continue;
                    }
                    match memchr(b'\n', &input[i..]) {
                        Some(p) => {
                            i += p + 1;
                            self.state = State::Normal;
                            self.line_start = true;
                        }
                        None => i = n,
                    }
                }
                State::Block => match memchr(b'*', &input[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::BlockStar;
                    }
                    None => i = n,
                },
                State::BlockStar => {
                    self.state = match input[i] {
                        b'/' => State::Normal,
                        b'*' => State::BlockStar,
                        _ => State::Block,
                    };
                    i += 1;
                }
                State::DelimMatch(k) => {
                    let k = k as usize;
                    if input[i] == self.delim[k] {
                        i += 1;
                        if k + 1 == self.delim_len {
                            self.state = State::Normal;
                            self.end(sink)?;
                        } else {
                            self.state = State::DelimMatch(k as u8 + 1);
                        }
                    } else {
                        // Not the delimiter after all: its prefix was ordinary text.
                        let prefix = self.delim;
                        self.state = State::Normal;
                        self.suppress_delim = true;
                        self.feed(&prefix[..k], sink)?;
                    }
                }
                State::DelimCmdSpace => match input[i] {
                    b' ' | b'\t' => i += 1,
                    _ => self.state = State::DelimCmdArg,
                },
                State::DelimCmdArg => {
                    let b = input[i];
                    if b <= b' ' {
                        self.state = State::DelimCmdRest;
                    } else {
                        if self.new_delim_len < MAX_DELIM {
                            self.new_delim[self.new_delim_len] = b;
                        }
                        self.new_delim_len += 1;
                        i += 1;
                    }
                }
                State::DelimCmdRest => match memchr(b'\n', &input[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.set_delimiter();
                        self.state = State::Normal;
                        self.line_start = true;
                        self.end(sink)?;
                    }
                    None => i = n,
                },
            }
        }
        Ok(())
    }
}
