//! Helpers shared by the attachment and verify tests: a generated store with
//! its tool config and repository, and kcbackup runs parsed from `--json`.
#![allow(dead_code)] // each test binary uses a different part

pub mod s3server;
pub mod tamper;

use std::fs;
use std::path::{Path, PathBuf};

use kcbackup::generator::{GeneratedStore, StoreSpec};
use kcbackup::layout::Layout;
use serde_json::Value;

use crate::common;

/// A generated store, a repository and the config that ties them together.
pub struct Env {
    pub store: GeneratedStore,
    pub repo: PathBuf,
    pub config: PathBuf,
    _store_dir: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

/// A small generated store of `layout` (see `StoreSpec::small`).
pub fn env(layout: Layout) -> Env {
    env_with(layout, |_| {})
}

/// [`env`], with `tweak` applied to the store's spec first.
pub fn env_with(layout: Layout, tweak: impl FnOnce(&mut StoreSpec)) -> Env {
    let (store_dir, store) = common::new_store(layout, tweak);
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    Env {
        store,
        repo,
        config,
        _store_dir: store_dir,
        _dir: dir,
    }
}

/// What one kcbackup run returned.
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Env {
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = common::kcbackup(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("kcbackup {args:?}: no JSON on stdout ({e}): {stdout}\nstderr: {stderr}")
        });
        Run {
            code: out.status.code().unwrap_or(-1),
            json,
            stderr,
        }
    }

    /// Like [`Env::run`], for runs that may print no JSON (errors): then
    /// `json` is `Null`.
    pub fn run_any(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = common::kcbackup(&all);
        Run {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `backup --json`, which must publish a set (exit 0 or 3).
    pub fn backup(&self, extra: &[&str]) -> Run {
        let mut args = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        assert!(
            run.code == 0 || run.code == 3,
            "backup exited {}: {}",
            run.code,
            run.stderr
        );
        run
    }

    pub fn verify(&self, set: &str) -> Run {
        self.run(&["verify", set, "--json"])
    }

    pub fn set_dir(&self, set: &str) -> PathBuf {
        self.repo.join("sets").join(set)
    }

    /// Total size of every object in the repository.
    pub fn objects_bytes(&self) -> u64 {
        tree_bytes(&self.repo.join("objects"))
    }

    /// Every stored object file (not temporaries, not those moved aside), sorted.
    pub fn object_files(&self) -> Vec<PathBuf> {
        let objects = self.repo.join("objects");
        common::verify::list_files(&objects)
            .into_iter()
            .filter(|rel| !rel.starts_with(".tmp") && !rel.starts_with(".corrupt"))
            .map(|rel| objects.join(rel))
            .collect()
    }
}

/// Total size of the files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    common::verify::list_files(dir)
        .iter()
        .map(|rel| fs::metadata(dir.join(rel)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// A number from a JSON document, by path (`attachments.referenced`).
pub fn num(v: &Value, path: &str) -> u64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

pub fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v:#}"))
}

/// Flips one bit of the byte at `offset` (from the end when negative).
pub fn flip_byte(path: &Path, offset: i64) {
    let mut bytes = fs::read(path).expect("reading file to damage");
    let i = if offset < 0 {
        bytes.len() - offset.unsigned_abs() as usize
    } else {
        offset as usize
    };
    bytes[i] ^= 0x01;
    fs::write(path, bytes).expect("writing damaged file");
}

/// The problems of a verify report as `kind path: detail` lines.
pub fn problems(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{} {}: {}",
                        p["kind"].as_str().unwrap_or(""),
                        p["path"].as_str().unwrap_or(""),
                        p["detail"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
