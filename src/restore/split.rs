//! Where a mariadb-dump/mysqldump text can be cut for a parallel load: the
//! preamble (session settings every connection needs), one contiguous byte
//! range per table (its DDL and data), and everything else (views, triggers,
//! events, routines, the trailer), which must run after all tables.

use std::collections::HashSet;

/// Who runs a range of the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Sent to every connection first.
    Preamble,
    /// One table's structure and data, on one connection, in order.
    Table(String),
    /// After every table is loaded, on one connection, in dump order.
    After,
}

/// A byte range `start..end` of the dump and who runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub dest: Dest,
    pub start: u64,
    pub end: u64,
}

/// How much of a line is kept to recognise it.
const HEAD: usize = 160;

/// Cuts the dump at its section comments, fed in pieces that may split
/// anywhere; it keeps only the start of the current line and the names of
/// the tables seen. A header counts only between statements (the previous
/// statement ended with the delimiter) and outside `DELIMITER` blocks, so a
/// look-alike inside a multi-line statement or a routine body is not one.
/// A table's range ends with its data's `UNLOCK TABLES;`: what follows it
/// up to the next header (its triggers, the trailer) is [`Dest::After`].
/// A table named again after another section goes to `After` as well, so
/// its statements still run in dump order.
pub struct Splitter {
    dest: Dest,
    /// Start of the open segment.
    start: u64,
    /// Offset of the next byte fed.
    pos: u64,
    line_start: u64,
    head: Vec<u8>,
    /// Last bytes of the line, trailing blanks skipped: enough for `;;`.
    tail: Vec<u8>,
    /// A statement is open: its delimiter has not been seen yet.
    open: bool,
    delimiter: Vec<u8>,
    seen: HashSet<String>,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Splitter {
    pub fn new() -> Self {
        Splitter {
            dest: Dest::Preamble,
            start: 0,
            pos: 0,
            line_start: 0,
            head: Vec::with_capacity(HEAD),
            tail: Vec::new(),
            open: false,
            delimiter: b";".to_vec(),
            seen: HashSet::new(),
        }
    }

    /// Feeds the next bytes; `out` gets each segment as it closes.
    pub fn feed(&mut self, buf: &[u8], out: &mut impl FnMut(Segment)) {
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            let (piece, newline) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if self.head.len() < HEAD {
                let take = piece.len().min(HEAD - self.head.len());
                self.head.extend_from_slice(&piece[..take]);
            }
            self.note_tail(piece);
            self.pos += piece.len() as u64;
            at += piece.len();
            if newline {
                self.pos += 1;
                at += 1;
                self.end_line(out);
            }
        }
    }

    /// End of the dump: the last segment.
    pub fn finish(mut self, out: &mut impl FnMut(Segment)) {
        if self.pos > self.line_start {
            self.end_line(out);
        }
        self.close(self.pos, out);
    }

    fn note_tail(&mut self, piece: &[u8]) {
        let trimmed = trim_end(piece);
        if trimmed.is_empty() {
            return;
        }
        if trimmed.len() >= 2 {
            self.tail.clear();
        }
        self.tail
            .extend_from_slice(&trimmed[trimmed.len().saturating_sub(2)..]);
        let cut = self.tail.len().saturating_sub(2);
        self.tail.drain(..cut);
    }

    fn close(&mut self, at: u64, out: &mut impl FnMut(Segment)) {
        if at > self.start {
            out(Segment {
                dest: self.dest.clone(),
                start: self.start,
                end: at,
            });
        }
        self.start = at;
    }

    /// Switches to `dest` from `at` on.
    fn switch(&mut self, dest: Dest, at: u64, out: &mut impl FnMut(Segment)) {
        if dest != self.dest {
            self.close(at, out);
            self.dest = dest;
        }
    }

    fn end_line(&mut self, out: &mut impl FnMut(Segment)) {
        let head = std::mem::take(&mut self.head);
        let line = trim_end(&head);
        let between = !self.open && self.delimiter == b";";
        let line_start = self.line_start;
        self.line_start = self.pos;
        if between && let Some(header) = header(line) {
            let dest = match header {
                // A table named again after another section runs after.
                Header::Table(name)
                    if self.dest == Dest::Table(name.clone()) || self.seen.insert(name.clone()) =>
                {
                    Dest::Table(name)
                }
                Header::Table(_) | Header::After => Dest::After,
            };
            self.switch(dest, line_start, out);
        }
        // Comment lines leave a statement as it was; so does a `/* */`
        // alone on its line (the sandbox-mode line opening the dump).
        let comment = line.is_empty()
            || line == b"--"
            || line.starts_with(b"-- ")
            || (line.starts_with(b"/*") && self.tail.ends_with(b"*/"));
        if !self.open && line.len() >= 10 && line[..10].eq_ignore_ascii_case(b"DELIMITER ") {
            let d = trim_end(&line[10..]);
            if !d.is_empty() {
                self.delimiter = d.to_vec();
            }
        } else if self.open || !comment {
            self.open = !self.tail.ends_with(&self.delimiter);
        }
        if between
            && !self.open
            && matches!(self.dest, Dest::Table(_))
            && line.eq_ignore_ascii_case(b"UNLOCK TABLES;")
        {
            self.switch(Dest::After, self.pos, out);
        }
        self.tail.clear();
        self.head = head;
        self.head.clear();
    }
}

enum Header {
    Table(String),
    After,
}

fn header(line: &[u8]) -> Option<Header> {
    const TABLE: [&[u8]; 2] = [
        b"-- Table structure for table ",
        b"-- Dumping data for table ",
    ];
    const AFTER: [&[u8]; 6] = [
        b"-- Temporary table structure for view ",
        b"-- Temporary view structure for view ",
        b"-- Final view structure for view ",
        b"-- Dumping events for database ",
        b"-- Dumping routines for database ",
        b"-- Dump completed",
    ];
    for prefix in TABLE {
        if let Some(name) = line.strip_prefix(prefix) {
            let name = String::from_utf8_lossy(name);
            let name = name.trim().trim_matches('`').replace("``", "`");
            return Some(Header::Table(name));
        }
    }
    AFTER
        .iter()
        .any(|p| line.starts_with(p))
        .then_some(Header::After)
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19\n\
--\n\
/*!40101 SET NAMES utf8mb4 */;\n\
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n\
\n\
--\n\
-- Table structure for table `a`\n\
--\n\
\n\
DROP TABLE IF EXISTS `a`;\n\
CREATE TABLE `a` (\n\
  `id` int(11) NOT NULL,\n\
-- Table structure for table `fake`\n\
  PRIMARY KEY (`id`)\n\
) ENGINE=InnoDB;\n\
\n\
--\n\
-- Dumping data for table `a`\n\
--\n\
\n\
LOCK TABLES `a` WRITE;\n\
INSERT INTO `a` VALUES (1),(2);\n\
UNLOCK TABLES;\n\
/*!50003 SET sql_mode = '' */ ;\n\
DELIMITER ;;\n\
/*!50003 CREATE TRIGGER t BEFORE INSERT ON a FOR EACH ROW BEGIN\n\
-- Table structure for table `fake2`\n\
SET @x = 1; END */;;\n\
DELIMITER ;\n\
\n\
--\n\
-- Table structure for table `b`\n\
--\n\
CREATE TABLE `b` (`id` int);\n\
--\n\
-- Dumping data for table `b`\n\
--\n\
LOCK TABLES `b` WRITE;\n\
UNLOCK TABLES;\n\
--\n\
-- Dumping routines for database 'kopano'\n\
--\n\
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;\n\
\n\
-- Dump completed on 2026-12-01\n";

    fn split(dump: &str, piece: usize) -> Vec<Segment> {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for part in dump.as_bytes().chunks(piece) {
            s.feed(part, &mut |seg| out.push(seg));
        }
        s.finish(&mut |seg| out.push(seg));
        out
    }

    #[test]
    fn tables_get_their_ranges_and_the_rest_runs_after() {
        let segs = split(DUMP, DUMP.len());
        let text = |s: &Segment| &DUMP[s.start as usize..s.end as usize];
        let dests: Vec<&Dest> = segs.iter().map(|s| &s.dest).collect();
        assert_eq!(
            dests,
            [
                &Dest::Preamble,
                &Dest::Table("a".into()),
                &Dest::After,
                &Dest::Table("b".into()),
                &Dest::After
            ]
        );
        assert!(text(&segs[0]).ends_with("FOREIGN_KEY_CHECKS=0 */;\n\n--\n"));
        assert!(text(&segs[1]).starts_with("-- Table structure for table `a`"));
        assert!(text(&segs[1]).contains("`fake`"));
        assert!(text(&segs[1]).ends_with("UNLOCK TABLES;\n"));
        assert!(text(&segs[2]).starts_with("/*!50003 SET sql_mode"));
        assert!(text(&segs[2]).contains("`fake2`"));
        assert!(text(&segs[3]).ends_with("LOCK TABLES `b` WRITE;\nUNLOCK TABLES;\n"));
        assert!(text(&segs[4]).ends_with("Dump completed on 2026-12-01\n"));
        // Contiguous, the whole dump.
        assert_eq!(segs[0].start, 0);
        assert!(segs.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(segs[4].end, DUMP.len() as u64);
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(split(DUMP, piece), segs, "fed in pieces of {piece}");
        }
    }

    #[test]
    fn a_table_named_again_later_runs_after() {
        let dump = "SET x=1;\n-- Table structure for table `a`\nCREATE TABLE a (i int);\n\
                    -- Table structure for table `b`\nCREATE TABLE b (i int);\n\
                    -- Dumping data for table `a`\nINSERT INTO a VALUES (1);\n";
        let dests: Vec<Dest> = split(dump, 5).into_iter().map(|s| s.dest).collect();
        assert_eq!(
            dests,
            [
                Dest::Preamble,
                Dest::Table("a".into()),
                Dest::Table("b".into()),
                Dest::After
            ]
        );
    }
}
