//! The repository on S3 (a real SeaweedFS on free ports, from
//! `tests/support/s3server.rs`): the storage contract checks that the
//! local storage runs, then the lock object.

mod common;
mod support;

use std::time::Duration;

use kcbackup::repo::storage::s3::S3Storage;
use kcbackup::repo::storage::{Storage, contract};
use kcbackup::settings::{S3Repo, Secret};
use support::s3server::{ACCESS_KEY, S3Server, SECRET_KEY, available, shared_seaweed};

fn repo_on(server: &S3Server, prefix: &str) -> S3Repo {
    S3Repo {
        bucket: server.bucket("kcrepo"),
        prefix: prefix.to_owned(),
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: Secret::new(SECRET_KEY),
        path_style: true,
        parallel: 4,
        timeout: std::time::Duration::from_secs(10),
        retries: 2,
    }
}

fn storage(prefix: &str) -> S3Storage {
    S3Storage::new(&repo_on(shared_seaweed(), prefix)).expect("S3 storage")
}

#[test]
fn s3_storage_keeps_the_storage_contract() {
    if !available("s3_storage_keeps_the_storage_contract") {
        return;
    }
    for prefix in ["kc/main", ""] {
        contract::records_are_written_once(&storage(prefix));
        contract::stat_list_and_delete(&storage(prefix));
        contract::commit_says_which_keys_are_new(&storage(prefix));
        contract::a_set_is_visible_only_once_published(&storage(prefix));
        contract::move_aside_never_replaces(&storage(prefix));
    }
}

#[test]
fn the_lock_object_keeps_writers_apart_and_names_its_holder() {
    if !available("the_lock_object_keeps_writers_apart_and_names_its_holder") {
        return;
    }
    let repo = repo_on(shared_seaweed(), "kc");
    let a = S3Storage::new(&repo).unwrap();
    let b = S3Storage::new(&repo).unwrap();
    let held = a.lock_exclusive("backup", Duration::ZERO).unwrap();
    let err = b.lock_exclusive("prune", Duration::ZERO).err().unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("holds the lock") && msg.contains("backup on "),
        "{msg}"
    );
    assert!(
        b.lock_shared("verify", Duration::ZERO).is_err(),
        "a reader waits for the writer"
    );
    // This process is alive: unlock refuses to break the lock.
    let un = b.unlock_stale().unwrap();
    assert!(un.removed.is_empty() && un.refused.len() == 1, "{un:?}");
    drop(held);
    // Readers share; a writer waits for them.
    let r1 = a.lock_shared("verify", Duration::ZERO).unwrap();
    let r2 = b.lock_shared("drill", Duration::ZERO).unwrap();
    assert!(a.lock_exclusive("backup", Duration::ZERO).is_err());
    drop((r1, r2));
    let again = b.lock_exclusive("backup", Duration::ZERO);
    assert!(again.is_ok(), "{:?}", again.err());
}

#[test]
fn a_large_object_goes_up_in_parts_and_reads_back_whole() {
    if !available("a_large_object_goes_up_in_parts_and_reads_back_whole") {
        return;
    }
    let mut s = storage("kc");
    s.multipart_above = 6 << 20;
    let data: Vec<u8> = (0..(21u32 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let mut staged = s.stage("objects").unwrap();
    std::io::Write::write_all(&mut staged.file, &data).unwrap();
    drop(staged.file);
    assert_eq!(
        s.commit(vec![(staged.path, "objects/ab/big".into())])
            .unwrap(),
        vec![true]
    );
    assert_eq!(s.stat("objects/ab/big").unwrap(), Some(data.len() as u64));
    assert!(
        contract::read(&s, "objects/ab/big") == data,
        "the parts read back in order"
    );
    // A multipart object's ETag ends in `-<parts>`.
    let url = s.locate("objects/ab/big");
    let (bucket, key) = url.trim_start_matches("s3://").split_once('/').unwrap();
    let etag = shared_seaweed()
        .client()
        .head(bucket, key)
        .unwrap()
        .unwrap()
        .etag
        .unwrap();
    assert!(etag.trim_matches('"').ends_with("-2"), "{etag}");
}

#[test]
fn refused_credentials_and_a_missing_bucket_are_configuration_errors() {
    if !available("refused_credentials_and_a_missing_bucket_are_configuration_errors") {
        return;
    }
    let mut repo = repo_on(shared_seaweed(), "kc");
    repo.retries = 0;
    repo.secret_access_key = Secret::new("not-the-secret");
    let err = S3Storage::new(&repo).unwrap().stat("config").unwrap_err();
    assert_eq!(
        kcbackup::error::exit_for(&err),
        kcbackup::error::Exit::Usage,
        "{err:#}"
    );
    let mut repo = repo_on(shared_seaweed(), "kc");
    repo.bucket = "kcrepo-no-such-bucket".into();
    let err = S3Storage::new(&repo).unwrap().get("config").err().unwrap();
    assert_eq!(
        kcbackup::error::exit_for(&err),
        kcbackup::error::Exit::Usage,
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("NoSuchBucket"), "{err:#}");
}
