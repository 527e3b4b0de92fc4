//! `kcbackup list`: the published sets, oldest first, with their status.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::repo::Repository;
use crate::restorable;
use crate::settings::Settings;

#[derive(Debug, Clone, Serialize)]
pub struct SetLine {
    pub id: String,
    pub time: Option<DateTime<Utc>>,
    pub tag: Option<String>,
    /// `complete`, `incomplete` or `damaged`.
    pub status: String,
    /// Bytes of the set's own files (dump, indexes, archives).
    pub bytes: u64,
    /// What the set holds: the SQL text plus the attachments, uncompressed.
    #[serde(default)]
    pub logical_bytes: u64,
    /// What the set added to the repository: its own files plus the
    /// attachment objects it was the first to store.
    #[serde(default)]
    pub added_bytes: u64,
    /// Why the set is damaged, if it is.
    pub problem: Option<String>,
    /// The newest drill of this set, if any.
    pub last_drill: Option<LastDrill>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDrill {
    pub time: DateTime<Utc>,
    pub ok: bool,
    /// The measured recovery time in seconds.
    pub recovery_s: f64,
}

pub fn run(settings: &Settings) -> Result<Vec<SetLine>> {
    let Some(repo) = Repository::open_if_exists_at(&settings.repository)? else {
        return Ok(Vec::new());
    };
    repo.storage().check_readable()?;
    let drills = super::drill::last_drills(&repo);
    let store = repo.objects()?;
    let last_drill = |id: &str| {
        drills.get(id).map(|d| LastDrill {
            time: d.started,
            ok: d.ok,
            recovery_s: d.durations.total,
        })
    };
    Ok(repo
        .sets()?
        .into_iter()
        .map(|s| {
            let status = s.status().to_string();
            let last_drill = last_drill(&s.id);
            match &s.manifest {
                Ok(m) => {
                    // A set that needs an object gone or damaged since
                    // (moved to objects/.corrupt/) is damaged until the next
                    // backup writes it again: a `stat` per object tells.
                    let missing = restorable::missing_objects(s.local_dir(), m, &store);
                    let (status, problem) = match missing.is_empty() {
                        true => (status, None),
                        false => ("damaged".to_string(), Some(missing.summary())),
                    };
                    SetLine {
                        id: s.id,
                        time: Some(m.started),
                        tag: m.tag.clone(),
                        status,
                        bytes: m.stored_bytes(),
                        logical_bytes: m.database.bytes + m.attachments.capture.bytes,
                        added_bytes: m.added_bytes(),
                        problem,
                        last_drill,
                    }
                }
                Err(e) => SetLine {
                    id: s.id,
                    time: None,
                    tag: None,
                    status,
                    bytes: 0,
                    logical_bytes: 0,
                    added_bytes: 0,
                    problem: Some(e.clone()),
                    last_drill,
                },
            }
        })
        .collect())
}
