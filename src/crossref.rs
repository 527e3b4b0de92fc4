//! The completeness proof: which attachment instances the dump references
//! and whether the captured tree (or the dump's `lob` rows) holds their data,
//! per storage layout. A pure function of its inputs, shared by `backup`
//! and `verify`; memory grows with instance ids and path hashes, not paths.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::attachments::{EntryKind, IndexEntry, read_index};
use crate::dump::refs::read_rows;
use crate::dump::scanner::{LobInstance, SingleInstanceRow};
use crate::error::config_error;
use crate::layout::Layout;

/// How many missing ids and corrupt paths the report lists (counts are exact).
pub const MAX_MISSING_IDS: usize = 1000;
pub const MAX_CORRUPT_PATHS: usize = 100;

/// The proof, as the manifest and `backup --json` carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossRef {
    /// The layout the proof was computed for (the database's backend).
    pub layout: String,
    /// Distinct instance ids in `singleinstances`.
    pub referenced: u64,
    pub present: u64,
    pub missing: u64,
    /// The first missing ids, ascending.
    pub missing_ids: Vec<u32>,
    /// Captured files (or `lob` instances) that hold attachment data.
    pub data_files: u64,
    /// Data no reference points to (newer than the dump, or orphaned).
    pub extra: u64,
    /// `*.deleted` and `testfile`: not data, left by Kopano.
    pub leftovers: u64,
    /// files_v2 content whose SHA-256 is not its name; `lob` instances with
    /// chunk gaps.
    pub corrupt: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt_paths: Vec<String>,
    /// Files that are none of the above for this layout.
    pub unrecognised: u64,
}

impl CrossRef {
    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.corrupt == 0
    }
}

/// Reads the inputs from the files a set (or a verify re-scan) holds.
/// `s3_prefix` is the listing prefix of an `s3` store (`S3Source.prefix`).
pub fn from_files(
    layout: Layout,
    server_guid: Option<&str>,
    s3_prefix: Option<&str>,
    references: &Path,
    index: &Path,
    lob: &Path,
) -> Result<CrossRef> {
    if layout == Layout::S3 {
        let Some(prefix) = s3_prefix else {
            return config_error("an s3 set must name its bucket's key prefix");
        };
        return cross_reference_s3(
            prefix,
            read_rows::<SingleInstanceRow>(references)?,
            read_index(index)?,
        );
    }
    // A first pass for the symlinks alone (few), so the proof can follow them.
    let links = Links::from_index(read_index(index)?)?;
    cross_reference_linked(
        layout,
        server_guid,
        read_rows::<SingleInstanceRow>(references)?,
        read_index(index)?,
        read_rows::<LobInstance>(lob)?,
        &links,
    )
}

/// The proof for an `s3` store: each referenced instance has an object at
/// `prefix + id` (or that without the leading `/`: servers differ). An
/// object recorded without a checksum is one whose body was not as long
/// as listed: corrupt, named by key. Objects of no referenced instance are
/// extras; keys that are no instance's are unrecognised.
pub fn cross_reference_s3(
    prefix: &str,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
) -> Result<CrossRef> {
    let mut report = CrossRef {
        layout: Layout::S3.to_string(),
        ..CrossRef::default()
    };
    let ids = referenced_ids(refs)?;
    let mut found = vec![false; ids.len()];
    for entry in index {
        let entry = entry?;
        if entry.kind != EntryKind::File {
            continue;
        }
        let Some(id) = Layout::s3_instance(prefix, &entry.path) else {
            report.unrecognised += 1;
            continue;
        };
        report.data_files += 1;
        if entry.sha256.is_none() {
            corrupt(&mut report, entry.path.clone());
        }
        match ids.binary_search(&id) {
            Ok(i) => found[i] = true,
            Err(_) => report.extra += 1,
        }
    }
    tally(&mut report, &ids, &found);
    Ok(report)
}

/// Computes the proof. `index` must be in walk order (as written by capture).
/// Symlinks in the index are not followed (see [`cross_reference_linked`]).
pub fn cross_reference(
    layout: Layout,
    server_guid: Option<&str>,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
    lobs: impl IntoIterator<Item = Result<LobInstance>>,
) -> Result<CrossRef> {
    let links = Links::default();
    cross_reference_linked(layout, server_guid, refs, index, lobs, &links)
}

/// The symlinks of an index (`path -> target`), to resolve a data path that
/// is a link the way kopano-server's open() would, but only within the
/// captured tree: a link counts as the data only if it leads to a file the
/// index holds (directly or through further links), never out of the tree.
#[derive(Debug, Default)]
pub struct Links {
    targets: HashMap<String, String>,
}

/// Symlinks followed in a row before giving up (the kernel's limit).
const MAX_HOPS: usize = 40;

impl Links {
    pub fn from_index(index: impl IntoIterator<Item = Result<IndexEntry>>) -> Result<Links> {
        let mut targets = HashMap::new();
        for entry in index {
            let entry = entry?;
            if entry.kind == EntryKind::Symlink
                && let Some(target) = entry.target
            {
                targets.insert(entry.path, target);
            }
        }
        Ok(Links { targets })
    }

    /// Where the link at `path` finally leads, relative to the tree root;
    /// `None` when it leaves the tree (absolute, `..` above the root),
    /// loops, or `path` is no link.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let first = self.targets.get(path)?;
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut done: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        // Components still to walk, the next one last.
        let mut todo: Vec<&str> = Vec::new();
        let mut hops = 0;
        let mut target = first.as_str();
        loop {
            hops += 1;
            if hops > MAX_HOPS || target.starts_with('/') {
                return None;
            }
            todo.extend(target.split('/').rev());
            let mut next_link = None;
            while let Some(c) = todo.pop() {
                match c {
                    "" | "." => {}
                    ".." => {
                        done.pop()?;
                    }
                    name => {
                        done.push(name);
                        if let Some(t) = self.targets.get(&done.join("/")) {
                            done.pop();
                            next_link = Some(t.as_str());
                            break;
                        }
                    }
                }
            }
            match next_link {
                Some(t) => target = t,
                None => break,
            }
        }
        (!done.is_empty()).then(|| done.join("/"))
    }

    /// Links that resolve, by the hash of the path they resolve to.
    fn resolved(&self, is_data: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        self.targets
            .keys()
            .filter(|p| is_data(p))
            .filter_map(|p| Some((p.clone(), path_hash(&self.resolve(p)?))))
            .collect()
    }
}

fn path_hash(path: &str) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// For the links at data paths: the captured files they lead to. Taps the
/// index as it streams by and, at the end, gives the links as if they were
/// those files (with the target's checksum).
struct LinkTap {
    wanted: Vec<(String, u64)>,
    hashes: HashSet<u64>,
    found: HashMap<u64, IndexEntry>,
}

impl LinkTap {
    fn new(links: &Links, is_data: impl Fn(&str) -> bool) -> LinkTap {
        let wanted = links.resolved(is_data);
        let hashes = wanted.iter().map(|&(_, h)| h).collect();
        LinkTap {
            wanted,
            hashes,
            found: HashMap::new(),
        }
    }

    fn see(&mut self, entry: &Result<IndexEntry>) {
        if let Ok(e) = entry
            && !self.hashes.is_empty()
            && e.kind == EntryKind::File
        {
            let h = path_hash(&e.path);
            if self.hashes.contains(&h) {
                self.found.insert(h, e.clone());
            }
        }
    }

    /// The links whose target was captured, as file entries at the link's path.
    fn take_files(&mut self) -> Vec<IndexEntry> {
        let mut out: Vec<IndexEntry> = std::mem::take(&mut self.wanted)
            .into_iter()
            .filter_map(|(path, h)| {
                let target = self.found.get(&h)?;
                Some(IndexEntry {
                    path,
                    ..target.clone()
                })
            })
            .collect();
        out.sort_by(|a, b| crate::walk::cmp_paths(&a.path, &b.path));
        out
    }
}

/// `index` as it was, then the links at data paths that lead to captured
/// files, as those files (once `index` is used up).
fn with_links<'a>(
    index: impl IntoIterator<Item = Result<IndexEntry>> + 'a,
    tap: &'a RefCell<LinkTap>,
) -> impl Iterator<Item = Result<IndexEntry>> + 'a {
    index
        .into_iter()
        .inspect(move |e| tap.borrow_mut().see(e))
        .chain(
            std::iter::once(())
                .flat_map(move |()| tap.borrow_mut().take_files().into_iter().map(Ok)),
        )
}

/// [`cross_reference`], following the index's symlinks at data paths
/// (see [`Links`]).
pub fn cross_reference_linked(
    layout: Layout,
    server_guid: Option<&str>,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
    lobs: impl IntoIterator<Item = Result<LobInstance>>,
    links: &Links,
) -> Result<CrossRef> {
    let mut report = CrossRef {
        layout: layout.to_string(),
        ..CrossRef::default()
    };
    match layout {
        Layout::FilesV1 { l1, l2 } => {
            let tap = RefCell::new(LinkTap::new(links, |p| v1_instance(p, l1, l2).is_some()));
            files_v1(&mut report, l1, l2, refs, with_links(index, &tap))?
        }
        Layout::FilesV2 => {
            let is_data = |p: &str| {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                name == "content" || dir.ends_with("/holder")
            };
            let tap = RefCell::new(LinkTap::new(links, is_data));
            files_v2(&mut report, server_guid, refs, with_links(index, &tap))?
        }
        Layout::Database => database(&mut report, refs, index, lobs)?,
        Layout::S3 => return config_error("an s3 store is proved by cross_reference_s3"),
    }
    Ok(report)
}

/// Distinct referenced ids, ascending.
fn referenced_ids(refs: impl IntoIterator<Item = Result<SingleInstanceRow>>) -> Result<Vec<u32>> {
    let mut ids = refs
        .into_iter()
        .map(|r| r.map(|r| r.instanceid))
        .collect::<Result<Vec<_>>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Fills referenced/present/missing from ids and a parallel "found" list.
fn tally(report: &mut CrossRef, ids: &[u32], found: &[bool]) {
    report.referenced = ids.len() as u64;
    for (&id, &ok) in ids.iter().zip(found) {
        if ok {
            report.present += 1;
        } else {
            report.missing += 1;
            if report.missing_ids.len() < MAX_MISSING_IDS {
                report.missing_ids.push(id);
            }
        }
    }
}

fn corrupt(report: &mut CrossRef, what: String) {
    report.corrupt += 1;
    if report.corrupt_paths.len() < MAX_CORRUPT_PATHS {
        report.corrupt_paths.push(what);
    }
}

/// `*.deleted` anywhere, `testfile` at the top.
fn is_leftover(path: &str) -> bool {
    path == "testfile" || path.ends_with(".deleted")
}

/// The regular files of the index, leftovers counted and skipped.
fn data_candidates(
    report: &mut CrossRef,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
) -> impl Iterator<Item = Result<IndexEntry>> {
    index.into_iter().filter(move |e| match e {
        Ok(e) if e.kind != EntryKind::File => false,
        Ok(e) if is_leftover(&e.path) => {
            report.leftovers += 1;
            false
        }
        _ => true,
    })
}

fn files_v1(
    report: &mut CrossRef,
    l1: u32,
    l2: u32,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    let ids = referenced_ids(refs)?;
    let mut found = vec![false; ids.len()];
    let (mut data, mut extra, mut unrecognised) = (0, 0, 0);
    for entry in data_candidates(report, index) {
        let entry = entry?;
        match v1_instance(&entry.path, l1, l2) {
            Some(id) => {
                data += 1;
                match ids.binary_search(&id) {
                    Ok(i) => found[i] = true,
                    Err(_) => extra += 1,
                }
            }
            None => unrecognised += 1,
        }
    }
    (report.data_files, report.extra, report.unrecognised) = (data, extra, unrecognised);
    tally(report, &ids, &found);
    Ok(())
}

/// The instance whose data `path` is under files_v1-L1-L2, if it is one.
fn v1_instance(path: &str, l1: u32, l2: u32) -> Option<u32> {
    let (dir, name) = path.rsplit_once('/')?;
    let digits = name.strip_suffix(".gz").unwrap_or(name);
    let id: u32 = digits.parse().ok()?;
    // Exactly Kopano's spelling: no sign, no leading zeros, right directory.
    (id.to_string() == digits && Layout::v1_dir(l1, l2, id).to_str() == Some(dir)).then_some(id)
}

fn dir_hash(dir: &str) -> u64 {
    let mut h = DefaultHasher::new();
    dir.trim_matches('/').hash(&mut h);
    h.finish()
}

/// The hex a normal files_v2 directory `<h0h1>/<h2h3>/<60 hex>` spells, if it is one.
fn v2_dir_hex(dir: &str) -> Option<String> {
    let parts: Vec<&str> = dir.split('/').collect();
    let hex_ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts[..] {
        [a, b, c] if hex_ok(a, 2) && hex_ok(b, 2) && hex_ok(c, 60) => {
            Some(format!("{a}{b}{c}").to_ascii_lowercase())
        }
        _ => None,
    }
}

/// `s<32 hex guid>i<id>` -> (guid, id).
fn v2_holder(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('s')?;
    let (guid, id) = rest.split_once('i')?;
    (guid.len() == 32).then_some(())?;
    Some((guid, id.parse().ok()?))
}

fn files_v2(
    report: &mut CrossRef,
    server_guid: Option<&str>,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
) -> Result<()> {
    // (instance id, hash of its directory) per reference.
    let mut wanted = Vec::new();
    for row in refs {
        let row = row?;
        wanted.push((
            row.instanceid,
            dir_hash(row.filename.as_deref().unwrap_or("")),
        ));
    }
    wanted.sort_unstable();
    wanted.dedup();
    let mut wanted_dirs: Vec<u64> = wanted.iter().map(|&(_, d)| d).collect();
    wanted_dirs.sort_unstable();
    wanted_dirs.dedup();

    let mut contents: Vec<(u64, bool)> = Vec::new();
    let mut holders: Vec<(u32, u64)> = Vec::new();
    let (mut data, mut extra, mut unrecognised) = (0, 0, 0);
    let mut corrupt_found = Vec::new();
    for entry in data_candidates(report, index) {
        let entry = entry?;
        let (dir, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
        if name == "content" {
            data += 1;
            let ok = match v2_dir_hex(dir) {
                Some(hex) => entry.sha256.as_deref().map(str::to_ascii_lowercase) == Some(hex),
                // Fallback directories do not spell a hash: nothing to compare.
                None => true,
            };
            if !ok {
                corrupt_found.push(entry.path.clone());
            }
            let hash = dir_hash(dir);
            if wanted_dirs.binary_search(&hash).is_err() {
                extra += 1;
            }
            contents.push((hash, ok));
            continue;
        }
        let holder = dir
            .strip_suffix("/holder")
            .zip(v2_holder(name))
            .filter(|(_, (guid, _))| server_guid.is_none_or(|g| g.eq_ignore_ascii_case(guid)));
        match holder {
            Some((data_dir, (_, id))) => holders.push((id, dir_hash(data_dir))),
            None => unrecognised += 1,
        }
    }
    for path in corrupt_found {
        corrupt(report, path);
    }
    (report.data_files, report.extra, report.unrecognised) = (data, extra, unrecognised);
    contents.sort_unstable();
    holders.sort_unstable();

    let mut ids: Vec<u32> = Vec::new();
    let mut found: Vec<bool> = Vec::new();
    for &(id, dir) in &wanted {
        let content_ok = contents
            .binary_search_by(|&(d, _)| d.cmp(&dir))
            .is_ok_and(|i| contents[i].1);
        let ok = content_ok && holders.binary_search(&(id, dir)).is_ok();
        if ids.last() == Some(&id) {
            // An instance referenced under two directories: either will do.
            if let Some(last) = found.last_mut() {
                *last |= ok;
            }
        } else {
            ids.push(id);
            found.push(ok);
        }
    }
    tally(report, &ids, &found);
    Ok(())
}

fn database(
    report: &mut CrossRef,
    refs: impl IntoIterator<Item = Result<SingleInstanceRow>>,
    index: impl IntoIterator<Item = Result<IndexEntry>>,
    lobs: impl IntoIterator<Item = Result<LobInstance>>,
) -> Result<()> {
    let ids = referenced_ids(refs)?;
    let mut stored = Vec::new();
    for lob in lobs {
        let lob = lob?;
        if lob.gap_free && lob.chunks > 0 {
            stored.push(lob.instanceid);
        } else {
            corrupt(
                report,
                format!(
                    "lob instance {} (tag {}): {} chunks, not numbered 0..n-1",
                    lob.instanceid, lob.tag, lob.chunks
                ),
            );
        }
    }
    stored.sort_unstable();
    stored.dedup();
    let found: Vec<bool> = ids
        .iter()
        .map(|id| stored.binary_search(id).is_ok())
        .collect();
    report.data_files = stored.len() as u64;
    report.extra = stored
        .iter()
        .filter(|id| ids.binary_search(id).is_err())
        .count() as u64;
    // Files in the attachment directory are not where this layout keeps data.
    let mut unrecognised = 0;
    for entry in data_candidates(report, index) {
        entry?;
        unrecognised += 1;
    }
    report.unrecognised = unrecognised;
    tally(report, &ids, &found);
    Ok(())
}

#[cfg(test)]
#[path = "crossref_tests.rs"]
mod tests;
