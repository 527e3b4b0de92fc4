//! What the prune tests share: purging messages from the store as Kopano
//! does (rows, then files), and the objects each set references and the
//! store holds, read through the library's own contract
//! (`repo::contents::referenced_objects`).
#![allow(dead_code)] // each prune test binary uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use kcbackup::repo::Repository;
use kcbackup::repo::contents::referenced_objects;
use kcbackup::repo::manifest::Manifest;

use crate::common;
use crate::faultkit::Fx;

/// Purges the `n` lowest-numbered referenced instances: their
/// `singleinstances` rows, then their files (as kopano-server's purge does).
pub fn purge(fx: &mut Fx, n: usize) {
    let ids: Vec<u32> = fx
        .store
        .expected
        .instances
        .keys()
        .copied()
        .take(n)
        .collect();
    assert_eq!(ids.len(), n, "not enough instances to purge");
    let list = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    common::query(&format!(
        "DELETE FROM `{}`.singleinstances WHERE instanceid IN ({list})",
        fx.store.database
    ));
    for id in ids {
        let info = fx.store.expected.instances.remove(&id).expect("instance");
        if let Some(path) = info.path {
            let file = fx.store.attachment_path.join(path);
            fs::remove_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

/// Every published set's referenced objects (SHA-256), by set id.
pub fn references(repo: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let r = Repository::open(repo).expect("repository");
    r.sets()
        .expect("sets")
        .into_iter()
        .map(|s| {
            let m = Manifest::load(&s.dir).expect("manifest");
            let refs = referenced_objects(&s.dir, &m).expect("references");
            (s.id, refs.into_keys().collect())
        })
        .collect()
}

/// The SHA-256 of every object file in the store (not .tmp, .corrupt).
pub fn stored(repo: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let objects = repo.join("objects");
    for shard in fs::read_dir(&objects).into_iter().flatten().flatten() {
        let name = shard.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            all.insert(n.trim_end_matches(".zst").to_owned());
        }
    }
    all
}

/// `sets/.trash-*` left in the repository.
pub fn trash(repo: &Path) -> Vec<String> {
    crate::faultkit::names(&repo.join("sets"))
        .into_iter()
        .filter(|n| n.starts_with(".trash-"))
        .collect()
}

/// The union of the references of `sets`.
pub fn union(refs: &BTreeMap<String, BTreeSet<String>>, sets: &[String]) -> BTreeSet<String> {
    sets.iter()
        .flat_map(|s| refs.get(s).into_iter().flatten().cloned())
        .collect()
}

/// The store holds exactly what the published sets reference: no garbage,
/// nothing missing.
pub fn assert_store_is_exactly_live(repo: &Path, what: &str) {
    let refs = references(repo);
    let live: BTreeSet<String> = refs.values().flatten().cloned().collect();
    let have = stored(repo);
    let garbage: Vec<_> = have.difference(&live).collect();
    let missing: Vec<_> = live.difference(&have).collect();
    assert!(
        garbage.is_empty(),
        "{what}: unreferenced objects left: {garbage:?}"
    );
    assert!(
        missing.is_empty(),
        "{what}: referenced objects missing: {missing:?}"
    );
}
