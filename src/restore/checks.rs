//! The checks a drill runs on the restored copy, the way kopano-server
//! would read it: row counts, version and backend against the manifest, every
//! referenced instance where its layout says, every file's checksum.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use crate::attachments::{EntryKind, IndexEntry, read_index};
use crate::commands::drill::{Check, failed, passed};
use crate::dump::scanner::KopanoVersion;
use crate::layout::Layout;
use crate::mysql::Client;
use crate::repo::digest::HashReader;
use crate::repo::manifest::Manifest;

/// How many missing ids a failed check lists.
const LISTED: usize = 20;

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Row counts, Kopano version and storage backend against the manifest.
/// `Err` only when a signal interrupted the checks.
pub fn check_database(
    client: &Client,
    manifest: &Manifest,
    tables: &mut usize,
    rows: &mut u64,
) -> Result<Vec<Check>> {
    let expected = &manifest.database.findings.row_counts;
    let mut mismatches = Vec::new();
    for (table, want) in expected {
        crate::signals::check()?;
        let got = client
            .query_value(&format!("SELECT COUNT(*) FROM {}", quote_ident(table)))
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok());
        *rows += got.unwrap_or(0);
        if got != Some(*want) {
            mismatches.push(format!(
                "{table}: {want} in the dump, {} restored",
                got.map_or("none".into(), |g| g.to_string())
            ));
        }
    }
    *tables = expected.len();
    let mut checks = vec![if mismatches.is_empty() {
        passed(
            "row counts",
            format!(
                "{} tables, {} rows, all equal to the dump's",
                expected.len(),
                rows
            ),
        )
    } else {
        failed("row counts", mismatches.join("; "))
    }];

    let version = client
        .query("SELECT major, minor, micro, revision, databaserevision FROM versions")
        .map(|out| {
            out.lines()
                .filter_map(|l| {
                    let v: Vec<u32> = l.split('\t').filter_map(|x| x.parse().ok()).collect();
                    (v.len() == 5).then(|| KopanoVersion {
                        major: v[0],
                        minor: v[1],
                        micro: v[2],
                        revision: v[3],
                        databaserevision: v[4],
                    })
                })
                .max()
                .map(|v| v.to_string())
        });
    checks.push(match version {
        Ok(v) if v == manifest.kopano.version => passed("kopano version", v.unwrap_or_default()),
        Ok(v) => failed(
            "kopano version",
            format!("restored {v:?}, manifest {:?}", manifest.kopano.version),
        ),
        Err(e) => failed("kopano version", format!("{e:#}")),
    });
    let backend =
        client.query_value("SELECT value FROM settings WHERE name = 'attachment_storage'");
    checks.push(match backend {
        Ok(b) if b == manifest.kopano.storage_backend => {
            passed("storage backend", b.unwrap_or_default())
        }
        Ok(b) => failed(
            "storage backend",
            format!(
                "restored {b:?}, manifest {:?}",
                manifest.kopano.storage_backend
            ),
        ),
        Err(e) => failed("storage backend", format!("{e:#}")),
    });
    crate::signals::check()?;
    Ok(checks)
}

/// Referenced instance ids not found: counted, the first [`LISTED`] named.
#[derive(Default)]
struct Missing {
    count: u64,
    ids: Vec<String>,
}

impl Missing {
    fn add(&mut self, id: u32) {
        self.count += 1;
        if self.ids.len() < LISTED {
            self.ids.push(id.to_string());
        }
    }
}

/// Every instance the RESTORED `singleinstances` references has its data
/// where kopano-server will look for it (for `database`: gap-free `lob`
/// chunks). `Err` only when a signal interrupted the check.
pub fn check_references(
    client: &Client,
    manifest: &Manifest,
    tree: &Path,
    referenced: &mut u64,
) -> Result<Check> {
    let name = "attachments present";
    // The layout the backup resolved and proved the set against (a store
    // without an `attachment_storage` row has one too).
    let Some(layout) = manifest.kopano.layout else {
        return Ok(failed(
            name,
            "the manifest names no attachment layout".into(),
        ));
    };
    let guid = manifest
        .database
        .findings
        .server_guid
        .as_deref()
        .and_then(|g| hex::decode(g).ok())
        .unwrap_or_default();
    // For `database`: instances whose chunks of every tag run 0..n-1.
    let (mut lob_ok, mut lob_bad) = (HashSet::new(), HashSet::new());
    if layout == Layout::Database {
        let r = client.for_each_row(
            "SELECT instanceid, COUNT(*), MIN(chunkid), MAX(chunkid) FROM lob GROUP BY instanceid, tag",
            |row| {
                let v: Vec<u64> = row.split('\t').filter_map(|x| x.parse().ok()).collect();
                let [id, count, min, max] = v[..] else {
                    return Err(anyhow!("unexpected row from lob: {row:?}"));
                };
                if min == 0 && max + 1 == count {
                    lob_ok.insert(id);
                } else {
                    lob_bad.insert(id);
                }
                Ok(())
            },
        );
        if let Err(e) = r {
            crate::signals::check()?;
            return Ok(failed(name, format!("{e:#}")));
        }
    }
    let mut missing = Missing::default();
    let mut last = None;
    let r = client.for_each_row(
        "SELECT instanceid, IFNULL(filename, '') FROM singleinstances ORDER BY instanceid",
        |row| {
            crate::signals::check()?;
            let mut cols = row.splitn(2, '\t');
            let id: u32 = cols
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|_| anyhow!("bad instanceid in {row:?}"))?;
            let filename = cols.next().unwrap_or_default();
            let new = last != Some(id);
            last = Some(id);
            // files_v2 keeps one holder per instance in the content
            // directory the row names; every other layout needs one look per id.
            if !new && layout != Layout::FilesV2 {
                return Ok(());
            }
            let present = match layout {
                Layout::FilesV1 { l1, l2 } => Layout::v1_candidates(l1, l2, id)
                    .iter()
                    .any(|p| readable(tree, &tree.join(p))),
                Layout::FilesV2 => {
                    !filename.is_empty()
                        && super::paths::check_rel(filename).is_ok()
                        && readable(tree, &tree.join(filename).join("content"))
                        && tree
                            .join(filename)
                            .join("holder")
                            .join(Layout::v2_holder_name(&guid, id))
                            .is_file()
                }
                Layout::Database => {
                    lob_ok.contains(&u64::from(id)) && !lob_bad.contains(&u64::from(id))
                }
                Layout::S3 => false,
            };
            if new {
                *referenced += 1;
            }
            if !present {
                missing.add(id);
            }
            Ok(())
        },
    );
    crate::signals::check()?;
    Ok(match r {
        Err(e) => failed(name, format!("{e:#}")),
        Ok(()) if missing.count == 0 => passed(
            name,
            format!(
                "{referenced} referenced instances, all readable where kopano-server looks ({layout})"
            ),
        ),
        Ok(()) => failed(
            name,
            format!(
                "{} of {referenced} referenced instances missing where kopano-server \
                 looks ({layout}): {}",
                missing.count,
                missing.ids.join(", ")
            ),
        ),
    })
}

/// kopano-server can open `path` as a regular file, and what it opens lies
/// inside the restored `tree`: a restored symlink pointing elsewhere (to a
/// disk of the live server, say) proves nothing about the set.
fn readable(tree: &Path, path: &Path) -> bool {
    let inside = match (std::fs::canonicalize(tree), std::fs::canonicalize(path)) {
        (Ok(tree), Ok(path)) => path.starts_with(tree),
        _ => false,
    };
    inside && File::open(path).is_ok_and(|f| f.metadata().is_ok_and(|m| m.is_file()))
}

/// Every restored file has the recorded checksum, and Kopano's gzip files
/// decode to the end (all members), in one read. `Err` only when a signal
/// interrupted the checks.
pub fn check_files(index: &Path, tree: &Path) -> Result<Check> {
    reread_all(
        index,
        "files",
        "checksums equal, gzip files decode",
        |entry| (entry.kind == EntryKind::File).then(|| check_file(&tree.join(&entry.path), entry)),
    )
}

/// The check `attachment checksums`: `check` on every entry of the set's
/// index (`None`: not one to check, e.g. a directory), the first few
/// failures named. `Err`
/// only when a signal interrupted it.
fn reread_all(
    index: &Path,
    noun: &str,
    passed_as: &str,
    mut check: impl FnMut(&IndexEntry) -> Option<Result<()>>,
) -> Result<Check> {
    let name = "attachment checksums";
    let mut bad = Vec::new();
    let mut bad_count = 0u64;
    let mut checked = 0u64;
    let entries = match read_index(index) {
        Ok(e) => e,
        Err(e) => return Ok(failed(name, format!("{e:#}"))),
    };
    for entry in entries {
        crate::signals::check()?;
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Ok(failed(name, format!("{e:#}"))),
        };
        let Some(result) = check(&entry) else {
            continue;
        };
        checked += 1;
        if let Err(e) = result {
            bad_count += 1;
            if bad.len() < LISTED {
                bad.push(format!("{}: {e:#}", entry.path));
            }
        }
    }
    Ok(if bad.is_empty() {
        passed(name, format!("{checked} {noun} re-read: {passed_as}"))
    } else {
        failed(
            name,
            format!("{bad_count} of {checked} {noun} bad: {}", bad.join("; ")),
        )
    })
}

fn check_file(path: &Path, entry: &IndexEntry) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = HashReader::new(io::BufReader::with_capacity(256 * 1024, file));
    let decoded = if entry.path.ends_with(".gz") {
        let mut gz = flate2::read::MultiGzDecoder::new(&mut reader);
        Some(io::copy(&mut gz, &mut io::sink()))
    } else {
        None
    };
    io::copy(&mut reader, &mut io::sink())?;
    let (bytes, sha) = reader.finish();
    if Some(sha.as_str()) != entry.sha256.as_deref() || bytes != entry.size {
        bail!("checksum differs from the set's");
    }
    if let Some(Err(e)) = decoded {
        return Err(e).context("gzip does not decode");
    }
    Ok(())
}

/// Where a drill restored an s3 set's objects: a scratch directory by key,
/// or a scratch bucket. Both answer by key, as kopano-server asks.
pub trait RestoredObjects {
    /// Whether an object is readable under `key` exactly.
    fn exists(&self, key: &str) -> Result<bool>;
    /// The object under `key` exactly, opened for reading; `None` when absent.
    fn open(&self, key: &str) -> Result<Option<Box<dyn io::Read + '_>>>;
}

/// The forms kopano-server's key may take in a bucket: as written, and
/// with the leading `/` stripped or added (servers differ on keeping it).
pub fn key_forms(key: &str) -> Vec<String> {
    let bare = key.trim_start_matches('/');
    let mut forms = vec![key.to_string()];
    for form in [bare.to_string(), format!("/{bare}")] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// Every instance the RESTORED `singleinstances` references has an object
/// at `prefix + id` (under either form of the key) where the drill restored
/// the set's objects. `Err` only when a signal interrupted the check.
pub fn check_s3_references(
    client: &Client,
    prefix: &str,
    objects: &dyn RestoredObjects,
    referenced: &mut u64,
) -> Result<Check> {
    let name = "attachments present";
    let mut missing = Missing::default();
    let mut problem = None;
    let r = client.for_each_row(
        "SELECT DISTINCT instanceid FROM singleinstances ORDER BY instanceid",
        |row| {
            crate::signals::check()?;
            let id: u32 = row
                .trim()
                .parse()
                .map_err(|_| anyhow!("bad instanceid in {row:?}"))?;
            *referenced += 1;
            let mut present = false;
            for key in key_forms(&format!("{prefix}{id}")) {
                match objects.exists(&key) {
                    Ok(true) => {
                        present = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        problem.get_or_insert_with(|| format!("{key}: {e:#}"));
                    }
                }
            }
            if !present {
                missing.add(id);
            }
            Ok(())
        },
    );
    crate::signals::check()?;
    let problem = problem
        .map(|p| format!(" (first error: {p})"))
        .unwrap_or_default();
    Ok(match r {
        Err(e) => failed(name, format!("{e:#}")),
        Ok(()) if missing.count == 0 => passed(
            name,
            format!("{referenced} referenced instances, all readable at their key (s3)"),
        ),
        Ok(()) => failed(
            name,
            format!(
                "{} of {referenced} referenced instances have no object at their \
                 key (s3): {}{problem}",
                missing.count,
                missing.ids.join(", ")
            ),
        ),
    })
}

/// Every object of an s3 set's index is read back from where the drill
/// restored it, with the recorded size and checksum. `Err` only when a
/// signal interrupted the check.
pub fn check_s3_objects(index: &Path, objects: &dyn RestoredObjects) -> Result<Check> {
    reread_all(index, "objects", "checksums equal", |entry| {
        Some(check_object(objects, entry))
    })
}

fn check_object(objects: &dyn RestoredObjects, entry: &IndexEntry) -> Result<()> {
    for key in key_forms(&entry.path) {
        let Some(body) = objects.open(&key)? else {
            continue;
        };
        let mut reader = HashReader::new(io::BufReader::with_capacity(256 * 1024, body));
        io::copy(&mut reader, &mut io::sink()).context("while reading it back")?;
        let (bytes, sha) = reader.finish();
        if Some(sha.as_str()) != entry.sha256.as_deref() || bytes != entry.size {
            bail!("checksum differs from the set's");
        }
        return Ok(());
    }
    bail!("not found where the drill restored it")
}

/// An s3 set's objects restored into a directory as files named by key.
pub struct ObjectsInDir<'a>(pub &'a Path);

impl ObjectsInDir<'_> {
    fn path(&self, key: &str) -> Option<std::path::PathBuf> {
        super::s3::key_path(key)
            .map(|rel| self.0.join(rel))
            .filter(|p| readable(self.0, p))
    }
}

impl RestoredObjects for ObjectsInDir<'_> {
    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key).is_some())
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn io::Read + '_>>> {
        match self.path(key) {
            None => Ok(None),
            Some(path) => {
                let file =
                    File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                Ok(Some(Box::new(file)))
            }
        }
    }
}
