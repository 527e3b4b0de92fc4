//! The filesystem steps of garbage collection, each small and named so it
//! can move behind a storage interface: retire a set (one rename to a hidden
//! trash name), list and delete retired sets, list and delete objects, and
//! drop drill reports of sets that are gone. Deciding WHAT to delete is the
//! caller's (`commands::prune`); every step here is safe to repeat.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::objects::{CORRUPT_DIR, Encoding, ObjectStore};
use super::{ExclusiveLock, Repository};

/// Prefix of sets being removed by prune: hidden from `sets()`, finished
/// by the next prune when one was killed.
pub const TRASH_PREFIX: &str = ".trash-";
/// Drill reports, under the repository root (`commands::drill::DRILLS_DIR`).
const DRILLS_DIR: &str = "drills";

/// One file of the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub sha256: String,
    pub encoding: Encoding,
    /// Size of the file as stored.
    pub bytes: u64,
}

impl Repository {
    /// Takes `id` out of the repository's sets with one rename to
    /// `sets/.trash-<id>`, made durable before returning: objects must not
    /// be deleted while a crash could bring the set back.
    pub fn retire_set(&self, _lock: &ExclusiveLock, id: &str) -> Result<()> {
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            bail!("{id:?} is not a set id");
        }
        let from = self.sets_dir().join(id);
        let to = self.sets_dir().join(format!("{TRASH_PREFIX}{id}"));
        fs::rename(&from, &to)
            .with_context(|| format!("while retiring set {id} (to {})", to.display()))?;
        sync_dir(&self.sets_dir())
    }

    /// Bytes of the files of the published set `id` (what removing it frees).
    pub fn set_bytes(&self, id: &str) -> u64 {
        crate::metrics::tree_bytes(&self.sets_dir().join(id))
    }

    /// Ids of retired sets not yet deleted (a prune was killed), sorted.
    pub fn retired_sets(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.sets_dir()).context("while listing the repository's sets")? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(TRASH_PREFIX) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Deletes the retired set `id` (all of what is left of it); returns
    /// the bytes freed. Nothing there is an error: it is already gone.
    pub fn delete_retired(&self, _lock: &ExclusiveLock, id: &str) -> Result<u64> {
        let dir = self.sets_dir().join(format!("{TRASH_PREFIX}{id}"));
        let bytes = crate::metrics::tree_bytes(&dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(e).with_context(|| format!("while deleting {}", dir.display()));
            }
        }
        Ok(bytes)
    }

    /// Deletes drill reports (`drills/<set>--<time>.json`) of sets not in
    /// `sets`, and half-written ones of killed drills; returns how many.
    /// Reports of remaining sets stay.
    pub fn delete_orphan_drill_reports(
        &self,
        _lock: &ExclusiveLock,
        sets: &BTreeSet<String>,
    ) -> Result<usize> {
        let dir = self.root().join(DRILLS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("while listing {}", dir.display())),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.with_context(|| format!("while listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A `.tmp` report is a killed drill's: no drill runs while the
            // exclusive lock is held.
            let leftover = name.starts_with('.') && name.ends_with(".tmp");
            let Some((set, _)) = name.split_once("--") else {
                continue;
            };
            if leftover || !sets.contains(set) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("while deleting {}", entry.path().display()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl ObjectStore {
    /// Calls `f` with every stored object, shard by shard (memory flat).
    /// Temporaries (`.tmp/`), quarantined objects (`.corrupt/`) and files
    /// whose names are not objects are not listed: nothing deletes them.
    pub fn list_objects(&self, f: &mut dyn FnMut(StoredObject) -> Result<()>) -> Result<()> {
        let root = self.dir();
        let shards = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("while listing {}", root.display())),
        };
        let mut names: Vec<String> = Vec::new();
        for entry in shards {
            let entry = entry.with_context(|| format!("while listing {}", root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                names.push(name);
            }
        }
        names.sort();
        for shard in names {
            let dir = root.join(&shard);
            for entry in
                fs::read_dir(&dir).with_context(|| format!("while listing {}", dir.display()))?
            {
                let entry = entry.with_context(|| format!("while listing {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let (sha256, encoding) = match name.strip_suffix(".zst") {
                    Some(sha) => (sha, Encoding::Zst),
                    None => (name.as_str(), Encoding::Raw),
                };
                if sha256.len() != 64
                    || !sha256.starts_with(&shard)
                    || !sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    continue;
                }
                let meta = entry
                    .metadata()
                    .with_context(|| format!("while reading {}", entry.path().display()))?;
                if !meta.is_file() {
                    continue;
                }
                f(StoredObject {
                    sha256: sha256.to_owned(),
                    encoding,
                    bytes: meta.len(),
                })?;
            }
        }
        Ok(())
    }

    /// Deletes one object file; already gone is fine (a repeated sweep).
    pub fn delete_object(&self, _lock: &ExclusiveLock, object: &StoredObject) -> Result<()> {
        let path = self.path(&object.sha256, object.encoding);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("while deleting object {}", path.display())),
        }
    }

    /// Files and bytes in `objects/.corrupt/` (kept for inspection: prune
    /// never deletes them).
    pub fn quarantined(&self) -> (u64, u64) {
        let dir = self.dir().join(CORRUPT_DIR);
        let Ok(entries) = fs::read_dir(dir) else {
            return (0, 0);
        };
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
            .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("while syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_list_and_delete_are_repeatable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        fs::create_dir(repo.sets_dir().join("20261201T000000Z")).unwrap();
        fs::write(repo.sets_dir().join("20261201T000000Z/x"), b"12345").unwrap();
        repo.retire_set(&lock, "20261201T000000Z").unwrap();
        assert!(repo.sets().unwrap().is_empty(), "a retired set is no set");
        assert_eq!(repo.retired_sets().unwrap(), ["20261201T000000Z"]);
        assert!(repo.retire_set(&lock, "20261201T000000Z").is_err());
        assert!(repo.retire_set(&lock, "../x").is_err());
        assert_eq!(repo.delete_retired(&lock, "20261201T000000Z").unwrap(), 5);
        assert_eq!(repo.delete_retired(&lock, "20261201T000000Z").unwrap(), 0);
        assert!(repo.retired_sets().unwrap().is_empty());
    }

    #[test]
    fn drill_reports_go_with_their_set_and_half_written_ones_always() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        let drills = dir.path().join(DRILLS_DIR);
        assert_eq!(
            repo.delete_orphan_drill_reports(&lock, &BTreeSet::new())
                .unwrap(),
            0
        );
        fs::create_dir(&drills).unwrap();
        for name in [
            "A--20261201T000000.000Z.json",
            "B--20261201T000000.000Z.json",
            ".A--20261202T000000.000Z.json.tmp",
            "notes.txt",
        ] {
            fs::write(drills.join(name), b"{}").unwrap();
        }
        let keep = BTreeSet::from(["A".to_owned()]);
        assert_eq!(repo.delete_orphan_drill_reports(&lock, &keep).unwrap(), 2);
        let mut left: Vec<_> = fs::read_dir(&drills)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["A--20261201T000000.000Z.json", "notes.txt"]);
    }

    #[test]
    fn objects_are_listed_by_name_and_only_objects() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        let store = repo.objects().unwrap();
        let (info, _) = store
            .put(
                &mut &b"some object data that compresses, compresses, compresses"[..],
                Encoding::Zst,
            )
            .unwrap();
        let (raw, _) = store.put(&mut &b"raw"[..], Encoding::Raw).unwrap();
        // Not objects: a stray file, a quarantined copy.
        fs::write(
            dir.path()
                .join("objects")
                .join(&info.sha256[..2])
                .join("notes.txt"),
            b"x",
        )
        .unwrap();
        fs::create_dir_all(dir.path().join("objects/.corrupt")).unwrap();
        fs::write(
            dir.path().join("objects/.corrupt").join(&raw.sha256),
            b"bad",
        )
        .unwrap();
        let mut seen = Vec::new();
        store
            .list_objects(&mut |o| {
                seen.push(o);
                Ok(())
            })
            .unwrap();
        seen.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        let mut want = vec![
            (info.sha256.clone(), Encoding::Zst, info.stored_bytes),
            (raw.sha256.clone(), Encoding::Raw, 3),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let got: Vec<_> = seen
            .iter()
            .map(|o| (o.sha256.clone(), o.encoding, o.bytes))
            .collect();
        assert_eq!(got, want);
        for o in &seen {
            store.delete_object(&lock, o).unwrap();
            store.delete_object(&lock, o).unwrap();
        }
        assert!(!store.exists(&info.sha256) && !store.exists(&raw.sha256));
        assert_eq!(store.quarantined(), (1, 3));
    }
}
