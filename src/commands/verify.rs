//! `kcbackup verify`: re-reads everything a set refers to (its own files,
//! the dump, the config archive, every stored object) and checks it against
//! the manifest, then re-runs the attachment proof from the STORED dump,
//! rescanned, rather than trusting the manifest's findings. Every problem
//! is collected; none stops the check.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::attachments::{EntryKind, IndexEntry, read_index};
use crate::config_archive;
use crate::crossref::{self, CrossRef};
use crate::dump::reader;
use crate::dump::refs::RefsWriter;
use crate::dump::scanner::{DumpFindings, Scanner};
use crate::layout::Layout;
use crate::progress::Progress;
use crate::repo::chunk_list;
use crate::repo::digest::{HashReader, HashWriter, file_digest};
use crate::repo::manifest::{MANIFEST, MANIFEST_SUM, Manifest};
use crate::repo::objects::{Encoding, ObjectStore};
use crate::repo::{Repository, SetInfo};
use crate::restorable;
use crate::settings::Settings;

/// How many problems the report lists (the count is exact).
pub const MAX_PROBLEMS: usize = 1000;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// A set id or `latest`.
    pub set: String,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    /// `manifest`, `set-file`, `dump`, `object`, `index`, `config`,
    /// `attachment-missing`, `attachment-corrupt`, `proof`.
    pub kind: &'static str,
    /// The file, object or instance concerned.
    pub path: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub set: String,
    pub ok: bool,
    /// Files and objects read in full, and their bytes as stored.
    pub checked_files: u64,
    pub checked_bytes: u64,
    /// The proof recomputed from the stored dump, when it could be.
    pub attachments: Option<CrossRef>,
    pub problems_total: u64,
    /// The first [`MAX_PROBLEMS`] problems, sorted.
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

/// Collects problems from several threads, keeping the first few.
#[derive(Default)]
struct Findings {
    list: Mutex<(u64, Vec<Problem>)>,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Findings {
    fn add(&self, kind: &'static str, path: impl Into<String>, detail: impl Into<String>) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.0 += 1;
        if list.1.len() < MAX_PROBLEMS {
            list.1.push(Problem {
                kind,
                path: path.into(),
                detail: detail.into(),
            });
        }
    }

    fn checked(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

pub fn run(
    settings: &Settings,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    crate::signals::install()?;
    verify(settings, opts, progress).map_err(crate::signals::explain)
}

fn verify(
    settings: &Settings,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let clock = Instant::now();
    let repo = Repository::open_at(&settings.repository)?;
    let mut lock = repo.lock_shared("verify")?;
    for name in crate::scratch::remove_dead_runs(&[]) {
        tracing::warn!("removed {name}, left by an earlier run that did not finish");
    }
    let set = repo.resolve(&opts.set)?;
    lock.describe(&format!("verify of set {}", set.id));
    let found = Findings::default();
    let mut attachments = None;

    match Manifest::load_suspect(set.local_dir()) {
        Err(e) => found.add("manifest", MANIFEST, format!("{e:#}")),
        Ok((manifest, mismatch)) => {
            if let Some(why) = mismatch {
                found.add("manifest", MANIFEST, why);
            }
            attachments = check_set(&repo, &set, &manifest, &found, progress)?;
        }
    }

    // An interrupted check is no verdict: what it found so far is dropped.
    crate::signals::check()?;
    let (total, mut problems) = found.list.into_inner().unwrap_or_else(|p| p.into_inner());
    problems.sort();
    Ok(VerifyReport {
        set: set.id,
        ok: total == 0,
        checked_files: found.files.into_inner(),
        checked_bytes: found.bytes.into_inner(),
        attachments,
        problems_total: total,
        problems,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Everything after the manifest: the set's files, the dump (in its own
/// thread, as it is the longest single read), objects, config, the proof.
fn check_set(
    repo: &Repository,
    set: &SetInfo,
    manifest: &Manifest,
    found: &Findings,
    progress: &dyn Progress,
) -> Result<Option<CrossRef>> {
    // Restore's own checks first, so verify refuses what restore refuses,
    // with the same words.
    let store = repo.objects()?;
    for f in restorable::check(set.local_dir(), manifest, &store).list {
        found.add("restorable", f.path, f.detail);
    }
    check_set_files(set, manifest, found);
    // Named after this run: if it is killed, the next run removes it.
    let scratch = crate::scratch::create(crate::scratch::VERIFY_PREFIX, None, false)?;
    let refs = scratch.path().join("singleinstances.jsonl.zst");
    let lob = scratch.path().join("lob.jsonl.zst");
    progress.start("verify", None);
    let rescanned = thread::scope(|scope| {
        let dump = scope.spawn(|| {
            if manifest.database.chunk_list.is_empty() {
                rescan_dump(set, manifest, &refs, &lob, found)
            } else {
                rescan_chunks(set, &store, manifest, &refs, &lob, found, progress)
            }
        });
        check_objects(&store, set, manifest, found, progress);
        dump.join().map_err(|_| anyhow!("the dump check panicked"))
    })?;
    progress.finish();

    if !manifest.config.file.is_empty() {
        let archive = set.local_path(&manifest.config.file);
        match config_archive::check(&archive, &manifest.config.entries) {
            Ok(diffs) => {
                for (path, detail) in diffs {
                    found.add("config", format!("{}:{path}", manifest.config.file), detail);
                }
            }
            Err(e) => found.add("config", &manifest.config.file, format!("{e:#}")),
        }
    }

    let Some(findings) = rescanned else {
        return Ok(None);
    };
    Ok(reprove(set, manifest, &findings, &refs, &lob, found))
}

/// Each file the manifest lists: present, same size, same SHA-256; and no
/// file the manifest does not know.
fn check_set_files(set: &SetInfo, manifest: &Manifest, found: &Findings) {
    // The dump is hashed by `rescan_dump` while it is decompressed: one read.
    for f in manifest
        .files
        .iter()
        .filter(|f| f.name != manifest.database.file)
    {
        if crate::signals::received().is_some() {
            return;
        }
        match file_digest(&set.local_path(&f.name)) {
            Ok((bytes, sha256)) => compare_set_file(manifest, &f.name, bytes, &sha256, found),
            Err(e) => found.add("set-file", &f.name, format!("{e:#}")),
        }
    }
    let Ok(names) = set.file_names() else {
        return;
    };
    for name in names {
        let known = name == MANIFEST || name == MANIFEST_SUM;
        if !known && !manifest.files.iter().any(|f| f.name == name) {
            found.add("set-file", name, "in the set but not in the manifest");
        }
    }
}

/// Compares a set file's size and SHA-256 with the manifest's entry.
fn compare_set_file(manifest: &Manifest, name: &str, bytes: u64, sha256: &str, found: &Findings) {
    found.checked(bytes);
    let Some(f) = manifest.files.iter().find(|f| f.name == name) else {
        return found.add("set-file", name, "not listed in the manifest");
    };
    if bytes != f.bytes || sha256 != f.sha256 {
        found.add(
            "set-file",
            name,
            format!(
                "{bytes} bytes with SHA-256 {sha256}; the manifest says {} bytes, {}",
                f.bytes, f.sha256
            ),
        );
    }
}

/// Reads every chunk of the dump in order, each checked before it is
/// scanned: every bad one is a finding naming it and its byte range (a
/// corrupt object is moved aside, as any other). After the first bad chunk
/// the rest are still checked but not scanned, and the result is `None`.
fn rescan_chunks(
    set: &SetInfo,
    store: &ObjectStore,
    manifest: &Manifest,
    refs: &Path,
    lob: &Path,
    found: &Findings,
    progress: &dyn Progress,
) -> Option<DumpFindings> {
    let db = &manifest.database;
    let mut scanner = match RefsWriter::create(refs, lob) {
        Ok(sink) => Some(Scanner::new(sink)),
        Err(e) => {
            found.add("dump", "reference lists", format!("{e:#}"));
            None
        }
    };
    let mut whole = HashWriter::new(io::sink());
    let mut buf = Vec::new();
    let mut quarantined = std::collections::HashSet::new();
    let chunks = match chunk_list::open(set.local_dir(), manifest) {
        Ok(chunks) => chunks,
        Err(e) => {
            // `restorable` has named the list already.
            tracing::debug!("dump not rescanned: {e:#}");
            return None;
        }
    };
    for chunk in chunks {
        if crate::signals::received().is_some() {
            return None;
        }
        let Ok(chunk) = chunk else {
            return None;
        };
        let chunk = &chunk;
        match reader::read_chunk(store, chunk, &mut buf) {
            Ok(()) => {
                found.checked(chunk.size);
                progress.inc(chunk.size);
                if scanner.is_some() {
                    let _ = whole.write_all(&buf);
                }
                if let Some(s) = scanner.as_mut()
                    && let Err(e) = s.feed(&buf)
                {
                    found.add("dump", "the dump", format!("{e:#}"));
                    scanner = None;
                }
            }
            Err(problem) => {
                let mut detail = problem.detail();
                if problem.object_corrupt() && quarantined.insert(chunk.sha256.clone()) {
                    match store.quarantine(&chunk.sha256, Encoding::Zst) {
                        Ok(to) => detail.push_str(&format!("; moved to {}", to.display())),
                        Err(e) => detail.push_str(&format!("; not moved aside: {e:#}")),
                    }
                }
                found.add("dump", problem.subject(), detail);
                scanner = None;
            }
        }
    }
    let scanner = scanner?;
    let (_, bytes, sha256) = whole.finish();
    if bytes != db.bytes || sha256 != db.sha256 {
        found.add(
            "dump",
            "the dump",
            format!(
                "its chunks make {bytes} bytes with SHA-256 {sha256}; the manifest says {} \
                 bytes, {}",
                db.bytes, db.sha256
            ),
        );
    }
    let findings = match scanner.finish() {
        Ok((findings, sink)) => match sink.finish() {
            Ok(()) => findings,
            Err(e) => {
                found.add("dump", "the dump", format!("{e:#}"));
                return None;
            }
        },
        Err(e) => {
            found.add("dump", "the dump", format!("{e:#}"));
            return None;
        }
    };
    compare_findings(manifest, "the dump", &findings, found);
    Some(findings)
}

/// The rescanned dump's findings against the manifest's.
fn compare_findings(manifest: &Manifest, what: &str, findings: &DumpFindings, found: &Findings) {
    if !findings.trailer_seen {
        found.add(
            "dump",
            what,
            "the dump has no completion trailer: truncated",
        );
    }
    if *findings != manifest.database.findings {
        found.add(
            "dump",
            what,
            "scanning the dump again gives other findings than the manifest records",
        );
    }
}

/// Decompresses the stored dump of a set written before chunking, checks
/// its size and SHA-256, and scans it again into fresh reference lists.
/// `None` when it cannot be read to the end.
fn rescan_dump(
    set: &SetInfo,
    manifest: &Manifest,
    refs: &Path,
    lob: &Path,
    found: &Findings,
) -> Option<DumpFindings> {
    let db = &manifest.database;
    let path = set.local_path(&db.file);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            found.add("set-file", &db.file, format!("while opening it: {e}"));
            found.add(
                "dump",
                &db.file,
                format!("while opening {}: {e}", path.display()),
            );
            return None;
        }
    };
    // The stored bytes are hashed as the decoder pulls them, so the file
    // is read once for both its own checksum and the SQL's.
    let mut stored = HashReader::new(file);
    let result = (|| -> Result<DumpFindings> {
        let mut sql = HashReader::new(zstd::Decoder::new(&mut stored)?);
        let mut scanner = Scanner::new(RefsWriter::create(refs, lob)?);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            crate::signals::check()?;
            let n = sql
                .read(&mut buf)
                .with_context(|| format!("while decompressing {}", path.display()))?;
            if n == 0 {
                break;
            }
            scanner.feed(&buf[..n])?;
        }
        let (findings, sink) = scanner.finish()?;
        sink.finish()?;
        let (bytes, sha256) = sql.finish();
        if bytes != db.bytes || sha256 != db.sha256 {
            found.add(
                "dump",
                &db.file,
                format!(
                    "the SQL is {bytes} bytes with SHA-256 {sha256}; the manifest says {} bytes, {}",
                    db.bytes, db.sha256
                ),
            );
        }
        Ok(findings)
    })();
    // Whatever the decoder left unread (after an error, or trailing bytes)
    // still belongs to the stored file's checksum.
    let drained = io::copy(&mut stored, &mut io::sink());
    let (stored_bytes, stored_sha256) = stored.finish();
    match drained {
        Ok(_) => compare_set_file(manifest, &db.file, stored_bytes, &stored_sha256, found),
        Err(e) => found.add("set-file", &db.file, format!("while reading it: {e}")),
    }
    match result {
        Ok(findings) => {
            compare_findings(manifest, &db.file, &findings, found);
            Some(findings)
        }
        Err(e) => {
            found.add("dump", &db.file, format!("{e:#}"));
            None
        }
    }
}

/// Every object the attachment index names: present, decodable, and of the
/// size and SHA-256 the index records. Workers share the reading.
fn check_objects(
    store: &ObjectStore,
    set: &SetInfo,
    manifest: &Manifest,
    found: &Findings,
    progress: &dyn Progress,
) {
    let name = &manifest.attachments.index_file;
    if name.is_empty() {
        return;
    }
    let index = match read_index(&set.local_path(name)) {
        Ok(index) => index,
        Err(e) => return found.add("index", name, format!("{e:#}")),
    };
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = sync_channel::<IndexEntry>(256);
    let rx = Mutex::new(rx);
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(entry) = next else { return };
                    if crate::signals::received().is_some() {
                        return;
                    }
                    check_object(store, &entry, found, progress);
                }
            });
        }
        for entry in index {
            if crate::signals::received().is_some() {
                break;
            }
            match entry {
                Ok(e) if e.kind == EntryKind::File => {
                    if tx.send(e).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    found.add("index", name, format!("{e:#}"));
                    break;
                }
            }
        }
        drop(tx);
    });
}

/// One object: decoded to the end and hashed. One whose content no longer
/// hashes to its name is corrupt whatever any index says, and is moved to
/// `objects/.corrupt/` with one rename (under the shared lock: other
/// readers keep reading the file they opened; restore would refuse it
/// anyway), so the next backup writes it again from the live store.
fn check_object(
    store: &ObjectStore,
    entry: &IndexEntry,
    found: &Findings,
    progress: &dyn Progress,
) {
    let Some(sha) = entry.sha256.as_deref() else {
        return found.add("index", &entry.path, "a file without a checksum");
    };
    let what = format!("{} (object {sha})", entry.path);
    let Some((encoding, _)) = store.stat(sha, entry.stored.unwrap_or(Encoding::Raw)) else {
        return found.add("object", what, "not in the repository");
    };
    match store.check(sha, encoding) {
        Ok(Some(size)) => {
            found.checked(size);
            progress.inc(size);
            if size != entry.size {
                found.add(
                    "object",
                    what,
                    format!("holds {size} bytes; the index says {} bytes", entry.size),
                );
            }
        }
        Ok(None) => {
            let moved = match store.quarantine(sha, encoding) {
                Ok(to) => format!("moved to {}", to.display()),
                Err(e) => format!("not moved aside: {e:#}"),
            };
            found.add(
                "object",
                what,
                format!("corrupt: its content no longer hashes to its name; {moved}"),
            );
        }
        Err(e) => found.add("object", what, format!("{e:#}")),
    }
}

/// The proof again, from the rescanned dump, compared with the manifest's.
fn reprove(
    set: &SetInfo,
    manifest: &Manifest,
    findings: &DumpFindings,
    refs: &Path,
    lob: &Path,
    found: &Findings,
) -> Option<CrossRef> {
    // The layout the backup resolved; the stored dump must still say the same.
    let layout = manifest.kopano.layout?;
    let dump = match manifest.database.file.as_str() {
        "" => "the dump",
        file => file,
    };
    match Layout::resolve(
        findings.attachment_storage.as_deref(),
        &manifest.kopano.configured_storage,
    ) {
        Ok(again) if again == layout => {}
        Ok(again) => found.add(
            "proof",
            dump,
            format!("the stored dump gives layout {again}; the manifest records {layout}"),
        ),
        Err(e) => found.add("proof", dump, format!("{e:#}")),
    }
    let index = set.local_path(&manifest.attachments.index_file);
    let s3_prefix = manifest.attachments.s3.as_ref().map(|s| s.prefix.as_str());
    let guid = findings.server_guid.as_deref();
    let proof = match crossref::from_files(layout, guid, s3_prefix, refs, &index, lob) {
        Ok(proof) => proof,
        Err(e) => {
            found.add("proof", &manifest.attachments.index_file, format!("{e:#}"));
            return None;
        }
    };
    for id in &proof.missing_ids {
        found.add(
            "attachment-missing",
            format!("instance {id}"),
            format!("referenced by the dump, no data in the set ({layout})"),
        );
    }
    for path in &proof.corrupt_paths {
        found.add(
            "attachment-corrupt",
            path,
            "the content does not match the hash its name promises",
        );
    }
    if proof != manifest.attachments.proof {
        found.add(
            "proof",
            MANIFEST,
            format!(
                "the manifest's attachment proof differs from the recomputed one \
                 (manifest: {} referenced, {} present; recomputed: {} referenced, {} present)",
                manifest.attachments.proof.referenced,
                manifest.attachments.proof.present,
                proof.referenced,
                proof.present
            ),
        );
    }
    Some(proof)
}
