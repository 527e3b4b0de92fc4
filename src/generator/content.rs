//! Deterministic content for generated stores: message text full of strings
//! that break naive SQL-dump parsers, attachment data (compressible text or
//! incompressible "JPEG" bytes) and RFC 5322 copies for IMAP users.

use rand::{Rng as _, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Text that every generated store contains verbatim in the body of its first
/// message: a line that looks like a `singleinstances` row and a fake dump
/// trailer, each at the start of a line.
pub const NASTY_BODY: &str = "Please ignore the following lines.\n\
INSERT INTO `singleinstances` VALUES (1,2,14081,'x');\n\
-- Dump completed on 2024-01-01  0:00:00\n\
That's all, O'Brien said: \\'quoted\\' \"twice\" \\\\server\\share),(1,2);--\n";

/// Fragments sprinkled through message text: quotes, backslashes, statement
/// separators, comment markers, control characters and non-ASCII text.
const SNIPPETS: &[&str] = &[
    "It's",
    "O'Brien's",
    "\\'",
    "\\\\",
    "C:\\Users\\kopano\\Desktop\\",
    "),(",
    ");",
    ";",
    "--",
    "\n-- ",
    "/*!40101 SET NAMES utf8 */;",
    "\"quoted\"",
    "'single'",
    "`backtick`",
    "\n",
    "\r\n",
    "\t",
    "Grüße",
    "Müller",
    "漢字",
    "日本語のテキスト",
    "😀",
    "🎉👍",
    "Ω≈ç√",
    "\\n",
    "NULL",
    "\\N",
    "DROP TABLE `hierarchy`;",
    "UNLOCK TABLES;",
    "\u{0}",
    "\u{1a}",
    "INSERT INTO `lob` VALUES (5,0,14081,'');",
    "\n-- Dump completed\n",
];

const WORDS: &[&str] = &[
    "the",
    "meeting",
    "invoice",
    "attached",
    "please",
    "find",
    "report",
    "quarterly",
    "budget",
    "server",
    "backup",
    "regards",
    "thanks",
    "project",
    "schedule",
    "review",
    "draft",
    "final",
    "update",
    "tomorrow",
    "customer",
    "order",
    "delivery",
    "and",
    "of",
    "to",
];

/// The kind of attachment data; decides whether Kopano would compress it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain text, compresses well.
    Text,
    /// A JPEG-looking blob of random bytes: never compressed by Kopano.
    Binary,
}

/// A recipe for attachment data: the same recipe always yields the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub seed: u64,
    pub size: usize,
    pub kind: Kind,
}

impl Content {
    pub fn bytes(&self) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        match self.kind {
            Kind::Text => {
                // Byte-exact size; the cut may split a UTF-8 sequence, which
                // is fine for attachment data.
                let mut b = words(&mut rng, self.size, 0).into_bytes();
                b.truncate(self.size);
                b
            }
            Kind::Binary => {
                let mut b = vec![0u8; self.size];
                rng.fill_bytes(&mut b);
                let header = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F'];
                let n = header.len().min(b.len());
                b[..n].copy_from_slice(&header[..n]);
                b
            }
        }
    }
}

/// Message text of about `len` bytes (cut at a character boundary) with a
/// nasty snippet every few words.
pub fn message_text(rng: &mut ChaCha8Rng, len: usize) -> String {
    let mut s = words(rng, len, 6);
    let mut cut = len.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// A short subject line, sometimes with a snippet in it.
pub fn subject(rng: &mut ChaCha8Rng, n: u64) -> String {
    let snippet = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
    let word = WORDS[rng.random_range(0..WORDS.len())];
    format!("Re: {word} #{n} {snippet}")
}

/// An RFC 5322 copy of a message, as kept for IMAP users (tag 26508).
pub fn rfc822(from: &str, subject: &str, body: &str, n: u64) -> Vec<u8> {
    format!(
        "Return-Path: <{from}@example.org>\r\nFrom: {from} <{from}@example.org>\r\n\
         To: team@example.org\r\nSubject: {}\r\nMessage-ID: <{n}.kcbackup@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
        subject.replace(['\r', '\n'], " "),
        body.replace('\n', "\r\n")
    )
    .into_bytes()
}

/// Words up to at least `len` bytes; every `snippet_every`-th word (0 = never)
/// is a snippet.
fn words(rng: &mut ChaCha8Rng, len: usize, snippet_every: u32) -> String {
    let mut s = String::with_capacity(len + 64);
    while s.len() < len {
        let r = rng.next_u32();
        if snippet_every > 0 && r.is_multiple_of(snippet_every) {
            s.push_str(SNIPPETS[(r >> 8) as usize % SNIPPETS.len()]);
        } else {
            s.push_str(WORDS[(r >> 8) as usize % WORDS.len()]);
        }
        s.push(if r & 0x1f == 0x1f { '\n' } else { ' ' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_sized() {
        for kind in [Kind::Text, Kind::Binary] {
            let c = Content {
                seed: 7,
                size: 5000,
                kind,
            };
            assert_eq!(c.bytes().len(), 5000);
            assert_eq!(c.bytes(), c.bytes());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = message_text(&mut rng, 300);
        assert!(t.len() <= 300 && t.len() > 280);
    }
}
