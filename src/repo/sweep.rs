//! The steps of garbage collection, each small and safe to repeat, on the
//! storage interface: retire a set, list and delete retired sets, list and
//! delete objects, and drop drill reports of sets that are gone. Deciding
//! WHAT to delete is the caller's (`commands::prune`).

use std::collections::BTreeSet;

use anyhow::Result;

use super::objects::{CORRUPT_DIR, Encoding, ObjectStore};
use super::storage::{CENSUSES as CENSUS_DIR, DRILLS, SETS};
use super::{ExclusiveLock, Repository};

/// One object of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub sha256: String,
    pub encoding: Encoding,
    /// Size of the object as stored.
    pub bytes: u64,
}

impl Repository {
    /// Takes `id` out of the repository's sets, durably before returning:
    /// objects must not be deleted while a crash could bring the set back.
    pub fn retire_set(&self, lock: &ExclusiveLock, id: &str) -> Result<()> {
        if id.is_empty() || id.starts_with('.') || id.contains('/') {
            anyhow::bail!("{id:?} is not a set id");
        }
        self.storage().retire_set(lock, id)
    }

    /// Bytes of the files of the published set `id` (what removing it frees).
    pub fn set_bytes(&self, id: &str) -> u64 {
        let mut total = 0;
        let _ = self
            .storage()
            .list(&format!("{SETS}/{id}"), &mut |_, bytes| {
                total += bytes;
                Ok(())
            });
        total
    }

    /// Ids of retired sets not yet deleted (a prune was killed), sorted.
    pub fn retired_sets(&self) -> Result<Vec<String>> {
        let mut ids = self.storage().retired_sets()?;
        ids.sort();
        Ok(ids)
    }

    /// Deletes the retired set `id` (all of what is left of it); returns
    /// the bytes freed. Nothing there is not an error: it is already gone.
    pub fn delete_retired(&self, lock: &ExclusiveLock, id: &str) -> Result<u64> {
        self.storage().delete_retired(lock, id)
    }

    /// Deletes drill reports (`drills/<set>--<time>.json`) of sets not in
    /// `sets`; returns how many. Reports of remaining sets stay; half-written
    /// ones are the storage's leftovers, gone with `remove_leftovers`.
    pub fn delete_orphan_drill_reports(
        &self,
        lock: &ExclusiveLock,
        sets: &BTreeSet<String>,
    ) -> Result<usize> {
        self.delete_orphan_records(
            lock,
            DRILLS,
            &|name| name.split_once("--").map(|(set, _)| vec![set]),
            sets,
        )
    }

    /// Deletes upgrade censuses (`censuses/<set>[-<n>].json`) of sets not
    /// in `sets`. A name such as `<id>-2.json` may be the second census of
    /// `<id>` or the census of set `<id>-2`: it stays if either remains.
    pub fn delete_orphan_censuses(
        &self,
        lock: &ExclusiveLock,
        sets: &BTreeSet<String>,
    ) -> Result<usize> {
        self.delete_orphan_records(
            lock,
            CENSUS_DIR,
            &|name| {
                let stem = name.strip_suffix(".json")?;
                let mut owners = vec![stem];
                if let Some((set, n)) = stem.rsplit_once('-')
                    && n.bytes().all(|b| b.is_ascii_digit())
                {
                    owners.push(set);
                }
                Some(owners)
            },
            sets,
        )
    }

    /// Deletes the records under `prefix` whose possible owners (from
    /// `owners` of the file name; `None`: not a record of a set) are all
    /// gone from `sets`; returns how many.
    fn delete_orphan_records(
        &self,
        lock: &ExclusiveLock,
        prefix: &str,
        owners: &dyn Fn(&str) -> Option<Vec<&str>>,
        sets: &BTreeSet<String>,
    ) -> Result<usize> {
        let mut orphans = Vec::new();
        self.storage().list(prefix, &mut |key, _| {
            let name = key.rsplit('/').next().unwrap_or(key);
            if let Some(owners) = owners(name)
                && !owners.iter().any(|set| sets.contains(*set))
            {
                orphans.push(key.to_owned());
            }
            Ok(())
        })?;
        for key in &orphans {
            self.storage().delete(lock, key)?;
        }
        Ok(orphans.len())
    }
}

impl ObjectStore {
    /// Calls `f` with every stored object (one at a time: memory flat).
    /// Temporaries, quarantined objects and keys that are not objects are
    /// not listed: nothing deletes them.
    pub fn list_objects(&self, f: &mut dyn FnMut(StoredObject) -> Result<()>) -> Result<()> {
        let prefix = self.prefix().to_owned();
        self.storage()
            .list(prefix.trim_end_matches('/'), &mut |key, bytes| {
                let Some(rest) = key.strip_prefix(prefix.as_str()) else {
                    return Ok(());
                };
                let Some((shard, name)) = rest.split_once('/') else {
                    return Ok(());
                };
                let (sha256, encoding) = match name.strip_suffix(".zst") {
                    Some(sha) => (sha, Encoding::Zst),
                    None => (name, Encoding::Raw),
                };
                let is_object = shard.len() == 2
                    && sha256.len() == 64
                    && sha256.starts_with(shard)
                    && sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if is_object {
                    f(StoredObject {
                        sha256: sha256.to_owned(),
                        encoding,
                        bytes,
                    })?;
                }
                Ok(())
            })
    }

    /// Deletes one object; already gone is fine (a repeated sweep).
    pub fn delete_object(&self, lock: &ExclusiveLock, object: &StoredObject) -> Result<()> {
        self.storage()
            .delete(lock, &self.key(&object.sha256, object.encoding))?;
        Ok(())
    }

    /// Files and bytes in `objects/.corrupt/` (kept for inspection: prune
    /// never deletes them).
    pub fn quarantined(&self) -> (u64, u64) {
        self.storage()
            .set_aside(&format!("{}{CORRUPT_DIR}", self.prefix()))
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn retire_list_and_delete_are_repeatable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        fs::create_dir(dir.path().join("sets/20261201T000000Z")).unwrap();
        fs::write(dir.path().join("sets/20261201T000000Z/x"), b"12345").unwrap();
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
    fn drill_reports_go_with_their_set() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        let drills = dir.path().join(DRILLS);
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
        assert_eq!(repo.delete_orphan_drill_reports(&lock, &keep).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(&drills)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".A--20261202T000000.000Z.json.tmp",
                "A--20261201T000000.000Z.json",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn a_census_goes_when_no_set_it_may_belong_to_remains() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open_or_create(dir.path()).unwrap();
        let lock = repo.lock_exclusive("prune").unwrap();
        let censuses = dir.path().join(CENSUS_DIR);
        fs::create_dir(&censuses).unwrap();
        for name in ["A.json", "A-2.json", "B-2.json", "C.json", "notes.txt"] {
            fs::write(censuses.join(name), b"{}").unwrap();
        }
        // B-2 is a set; A-2 is A's second census; C is gone.
        let keep = BTreeSet::from(["A".to_owned(), "B-2".to_owned()]);
        assert_eq!(repo.delete_orphan_censuses(&lock, &keep).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(&censuses)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["A-2.json", "A.json", "B-2.json", "notes.txt"]);
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
