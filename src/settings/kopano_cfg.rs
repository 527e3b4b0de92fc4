//! Reader for Kopano's `server.cfg` syntax (kopano-facts.md, section 1):
//! split at the first `=`, no inline comments, `!include` relative to the
//! including file, later settings win.
//!
//! Choices the facts leave open (Kopano's own reader: `ECConfigImpl.cpp`):
//! - A line whose first non-blank character is `#` is a comment. Kopano only
//!   looks at the very first byte, but an indented `# a = b` then becomes a
//!   setting named `# a`, which no one can look up, so the result is the same.
//! - A directive (`!include`) must start in column 1, as in Kopano: an
//!   indented `!include` is NOT followed (Kopano ignores it too). Directives
//!   other than `!include` (e.g. `!propmap`) are ignored.
//! - A line longer than [`MAX_LINE`] bytes (without its `\n`) is an error.
//!   Kopano's 4096-byte `fgets` buffer would silently cut it into pieces that
//!   each parse as a line; we refuse to guess which setting that produces.
//! - Files are read as bytes. [`KopanoCfg::get`] returns text decoded with
//!   `from_utf8_lossy`; [`KopanoCfg::get_bytes`] keeps the exact bytes, for
//!   values (paths, passwords) that must not be altered.
//! - A file counts as "already read" by its canonical path, and a relative
//!   `!include` is resolved against the canonical including file's folder
//!   (Kopano uses `realpath` for both, so symlinks are followed).
//! - Syntax problems (overlong line, `!include` of a missing file or of
//!   nothing) are [`ConfigError`]s (exit 2); I/O errors are not. Both carry
//!   `while reading FILE` for every file in the include chain.
//! - Not copied: Kopano's replacement of a value `$NAME` by that environment
//!   variable, and its cut of values to 1023 bytes. Neither is in the facts.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::ConfigError;

/// Longest line Kopano reads as one line, in bytes, not counting `\n`.
pub const MAX_LINE: usize = 4096;

/// Bytes Kopano trims from both ends of a name and a value.
const BLANKS: &[u8] = b" \t\r\n";

/// The settings of one Kopano config file and everything it includes.
#[derive(Clone, Default)]
pub struct KopanoCfg {
    values: HashMap<String, Value>,
    /// Canonical paths of every file read, in reading order.
    files: Vec<PathBuf>,
}

#[derive(Clone)]
struct Value {
    raw: Vec<u8>,
    text: String,
}

/// Values are left out: `mysql_password` lives here.
impl fmt::Debug for KopanoCfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("KopanoCfg")
            .field("names", &names)
            .field("files", &self.files)
            .finish()
    }
}

impl KopanoCfg {
    /// Reads `path` and the files it includes.
    pub fn read(path: &Path) -> anyhow::Result<KopanoCfg> {
        let mut reader = Reader::default();
        reader.read_file(path)?;
        Ok(reader.cfg)
    }

    /// Parses `text` as if it were a file in `base_dir` (which is where
    /// relative `!include`s are looked up).
    pub fn parse_str(text: &str, base_dir: &Path) -> anyhow::Result<KopanoCfg> {
        let mut reader = Reader::default();
        reader.parse(text.as_bytes(), base_dir)?;
        Ok(reader.cfg)
    }

    /// The value of setting `name` (names are case-sensitive, as in Kopano),
    /// with invalid UTF-8 replaced by U+FFFD.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|v| v.text.as_str())
    }

    /// The value of `name`, or `default` when the setting is absent.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// The exact bytes of the value of `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.values.get(name).map(|v| v.raw.as_slice())
    }

    /// The value of `name` as a path, byte for byte.
    pub fn get_path(&self, name: &str) -> Option<PathBuf> {
        self.get_bytes(name)
            .map(|b| PathBuf::from(OsStr::from_bytes(b)))
    }

    /// Canonical paths of every file read (the main file first), e.g. to
    /// capture included files that live outside the config folder.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Kopano's boolean rule: false only for `0`, `false`, `no` (any case);
/// anything else, including the empty string, is true.
pub fn bool_value(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no"))
}

/// Parsing state shared across one file and its includes.
#[derive(Default)]
struct Reader {
    cfg: KopanoCfg,
    seen: HashSet<PathBuf>,
}

impl Reader {
    fn read_file(&mut self, path: &Path) -> anyhow::Result<()> {
        self.read_file_inner(path)
            .with_context(|| format!("while reading {}", path.display()))
    }

    fn read_file_inner(&mut self, path: &Path) -> anyhow::Result<()> {
        let canonical = std::fs::canonicalize(path)?;
        // Also what stops include cycles.
        if !self.seen.insert(canonical.clone()) {
            return Ok(());
        }
        let bytes = std::fs::read(&canonical)?;
        let base_dir = canonical.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.cfg.files.push(canonical);
        self.parse(&bytes, &base_dir)
    }

    fn parse(&mut self, bytes: &[u8], base_dir: &Path) -> anyhow::Result<()> {
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let number = index + 1;
            if line.len() > MAX_LINE {
                return Err(ConfigError(format!(
                    "line {number} is {} bytes long; Kopano reads at most {MAX_LINE} \
                     bytes per line and would split it",
                    line.len()
                ))
                .into());
            }
            if let Some(directive) = line.strip_prefix(b"!") {
                self.directive(directive, number, base_dir)?;
                continue;
            }
            if trim(line).first() == Some(&b'#') {
                continue;
            }
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let name = trim(&line[..eq]);
            if name.is_empty() {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            let raw = trim(&line[eq + 1..]).to_vec();
            let text = String::from_utf8_lossy(&raw).into_owned();
            self.cfg.values.insert(name, Value { raw, text });
        }
        Ok(())
    }

    /// `line` is a directive line without its leading `!`.
    fn directive(&mut self, line: &[u8], number: usize, base_dir: &Path) -> anyhow::Result<()> {
        let end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        if trim(&line[..end]) != b"include" {
            return Ok(());
        }
        let arg = trim(&line[end..]);
        if arg.is_empty() {
            return Err(
                ConfigError(format!("line {number}: `!include` without a file name")).into(),
            );
        }
        let target = base_dir.join(OsStr::from_bytes(arg));
        match std::fs::metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError(format!(
                "line {number}: included file {} does not exist",
                target.display()
            ))
            .into()),
            _ => self.read_file(&target),
        }
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !BLANKS.contains(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !BLANKS.contains(last) {
            break;
        }
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests;
