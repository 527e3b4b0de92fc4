//! A repository written by the release before `config` existed (format 1,
//! committed under tests/fixtures/repo-format1/) keeps working: its sets
//! list, verify, restore and drill, and a new backup into it writes
//! `config` while the old sets still verify.

mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kcbackup::layout::Layout;
use sha2::{Digest, Sha256};

/// The spec of the fixture's store: small, so the fixture stays a few KB.
fn fixture_spec(spec: &mut kcbackup::generator::StoreSpec) {
    spec.users = 2;
    spec.messages_per_user = 3;
    spec.max_attachments_per_message = 2;
    spec.attachment_bytes = 1500;
    spec.body_bytes = 200;
    spec.lob_chunk = 1024;
    spec.extras = 1;
}

/// SHA-256 of every file below `root`, by relative path.
fn file_digests(root: &Path) -> BTreeMap<String, String> {
    common::verify::list_files(root)
        .into_iter()
        .map(|rel| {
            let bytes = fs::read(root.join(&rel)).unwrap();
            (
                rel.display().to_string(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect()
}

/// Writes the fixture with the binary of this build:
/// `KC_FIXTURE_OUT=dir cargo test --test repo_format -- --ignored make_fixture`.
/// Kept for the record of how tests/fixtures/repo-format1/ was made (with
/// the release before `config`, commit 3bbefd8).
#[test]
#[ignore]
fn make_fixture() {
    let out = std::path::PathBuf::from(std::env::var("KC_FIXTURE_OUT").expect("KC_FIXTURE_OUT"));
    let layout = Layout::FilesV1 { l1: 10, l2: 20 };
    let (_store_dir, store) = common::new_store(layout, fixture_spec);
    let dir = tempfile::tempdir().unwrap();
    let repo = out.join("repo");
    let config = common::write_tool_config(dir.path(), &store, &repo);
    let backup = || {
        let run = common::kcbackup(&["--config", config.to_str().unwrap(), "backup", "--json"]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        // Set ids are seconds: the second backup gets its own.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    };
    backup();
    backup();
    let expected = serde_json::json!({
        "row_counts": store.expected.row_counts,
        "attachments": file_digests(&store.attachment_path),
        "config": file_digests(&store.config_dir),
    });
    fs::write(
        out.join("expected.json"),
        serde_json::to_vec_pretty(&expected).unwrap(),
    )
    .unwrap();
}
