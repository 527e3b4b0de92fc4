//! `encryption = "age"` repositories (src/repo/storage/encrypted.rs): what
//! is stored holds no plaintext and no content hash, reads need the
//! identity and are refused in one line without it, deduplication works
//! across nights, copies go in and out of an encrypted repository, and an
//! encrypted S3 repository (the real SeaweedFS) is not warned about.

mod common;
mod faultkit;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use faultkit::{Fx, Out, V1};
use kcbackup::generator::{NASTY_BODY, add_attachments};
use support::s3server::{ACCESS_KEY, SECRET_KEY, available, shared_seaweed};

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// An age key pair written as `recipients` and `identity` (owner-only) in `dir`.
fn key_files(dir: &Path) -> (PathBuf, PathBuf) {
    let identity = age::x25519::Identity::generate();
    let (r, i) = (dir.join("recipients"), dir.join("identity"));
    fs::write(&r, format!("# kcbackup\n{}\n", identity.to_public())).unwrap();
    fs::write(&i, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    fs::set_permissions(&i, fs::Permissions::from_mode(0o600)).unwrap();
    (r, i)
}

/// The fixture with `[repositories.vault]` at `vault`, encrypted, in two
/// configs: a reader's (recipients and identity) and a writer's
/// (recipients only), plus `[repositories.back]`, a plain one.
struct Vault {
    fx: Fx,
    vault: PathBuf,
    back: PathBuf,
    reader: PathBuf,
    writer: PathBuf,
}

impl Vault {
    fn new() -> Vault {
        let fx = Fx::new(V1, |_| {});
        let (r, i) = key_files(fx.dir.path());
        let vault = fx.dir.path().join("vault");
        let back = fx.dir.path().join("back");
        let section = |identity: Option<&Path>| {
            let mut s = format!(
                "\n[repositories.vault]\npath = {}\nencryption = \"age\"\nrecipients_file = {}\n",
                toml_string(&vault.display().to_string()),
                toml_string(&r.display().to_string())
            );
            if let Some(i) = identity {
                s.push_str(&format!(
                    "identity_file = {}\n",
                    toml_string(&i.display().to_string())
                ));
            }
            s.push_str(&format!(
                "\n[repositories.back]\npath = {}\n",
                toml_string(&back.display().to_string())
            ));
            s
        };
        let reader = fx.config_with("reader", &fx.repo, &section(Some(&i)));
        let writer = fx.config_with("writer", &fx.repo, &section(None));
        Vault {
            fx,
            vault,
            back,
            reader,
            writer,
        }
    }

    fn run(&self, config: &Path, args: &[&str]) -> Out {
        let mut all = vec!["--repository", "vault"];
        all.extend_from_slice(args);
        self.fx.run_with(config, &all)
    }

    fn ok(&self, config: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.run(config, args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        out.json()
    }

    fn backup(&self, config: &Path) -> String {
        self.ok(config, &["backup", "--json"])["set"]
            .as_str()
            .expect("a set id")
            .to_owned()
    }
}

/// Every file below `dir` (path relative to it, bytes).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else if e.file_type().unwrap().is_file() {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// The stored object files of a local repository (no hidden ones).
fn object_files(repo: &Path) -> usize {
    files(&repo.join("objects"))
        .iter()
        .filter(|(n, _)| !n.split('/').any(|c| c.starts_with('.')))
        .count()
}

/// The hex SHA-256 of every object in a plain local repository.
fn object_hashes(repo: &Path) -> Vec<String> {
    files(&repo.join("objects"))
        .into_iter()
        .filter_map(|(n, _)| {
            let name = n.rsplit('/').next()?;
            let hash = name.split('.').next()?;
            (hash.len() == 64).then(|| hash.to_owned())
        })
        .collect()
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// 64 bytes of an attachment file of the store that a plain repository
/// holds verbatim (an incompressible one is stored as it is).
fn attachment_sample(store: &Path, plain: &[(String, Vec<u8>)]) -> Vec<u8> {
    for (_, data) in files(store) {
        if data.len() < 256 {
            continue;
        }
        let sample = &data[100..164];
        if plain.iter().any(|(_, d)| holds(d, sample)) {
            return sample.to_vec();
        }
    }
    panic!("no attachment of the store is stored verbatim in the plain repository");
}

#[test]
fn an_encrypted_repository_holds_no_plaintext_and_reads_only_with_the_identity() {
    let v = Vault::new();
    // The same store backed up in the clear, to know what must not be seen.
    v.fx.backup_ok();
    let plain = files(&v.fx.repo);
    let sample = attachment_sample(&v.fx.store.attachment_path, &plain);
    let hashes = object_hashes(&v.fx.repo);
    assert!(hashes.len() > 10, "{hashes:?}");
    assert!(
        plain
            .iter()
            .any(|(n, d)| n.contains(&hashes[0]) || holds(d, hashes[0].as_bytes())),
        "the plain repository names its objects by hash"
    );

    // Written with the recipients alone.
    let set = v.backup(&v.writer);
    let stored = files(&v.vault);
    assert!(stored.len() > hashes.len(), "{}", stored.len());
    let text = NASTY_BODY.lines().next().unwrap().as_bytes();
    for (name, data) in &stored {
        assert!(!holds(data, &sample), "{name} holds attachment bytes");
        assert!(!holds(data, text), "{name} holds message text");
        for h in &hashes {
            assert!(!name.contains(h.as_str()), "{name} names a content hash");
            assert!(!holds(data, h.as_bytes()), "{name} holds a content hash");
        }
        if name != "config" && !name.starts_with("lock") && !name.starts_with("holders") {
            assert!(
                data.starts_with(b"kcbackup-age-v1\n"),
                "{name} is not encrypted"
            );
        }
    }

    // With the identity: verify, restore and drill.
    let verify = v.ok(&v.reader, &["verify", &set, "--json"]);
    assert_eq!(verify["ok"], true, "{verify}");
    let restore: Vec<String> = v.fx.restore_args(&set, "encr");
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
    v.ok(&v.reader, &restore);
    let scratch = v.fx.dir.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let scratch = scratch.display().to_string();
    let drill = ["drill", "latest", "--json", "--scratch", scratch.as_str()];
    let report = v.ok(&v.reader, &drill);
    assert_eq!(report["ok"], true, "{report}");

    // Without it: one line each, exit 2.
    for args in [&["verify", &set][..], &restore, &drill, &["list"]] {
        let out = v.run(&v.writer, args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        let line = out.assert_one_message(&format!("{args:?}"));
        assert!(line.contains("identity_file"), "{line}");
    }
    let out =
        v.fx.run_with(&v.writer, &["copy", "latest", "--to", "back"]);
    assert_eq!(out.code, Some(0), "copy from the plain one: {}", out.stderr);
    let out = v.run(&v.writer, &["copy", "latest", "--to", "back"]);
    assert_eq!(out.code, Some(2), "copy from the vault: {}", out.stderr);
    assert!(out.assert_one_message("copy").contains("identity_file"));
    let left: Vec<_> = fs::read_dir(&v.fx.tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "plaintext left in TMPDIR: {left:?}");
}

#[test]
fn a_second_night_stores_only_the_new_objects_as_a_plain_repository_does() {
    let mut v = Vault::new();
    v.fx.backup_ok();
    v.backup(&v.writer);
    let (plain1, vault1) = (object_files(&v.fx.repo), object_files(&v.vault));
    assert_eq!(plain1, vault1, "one stored file per object");
    let bytes = |r: &Path| files(r).iter().map(|(_, d)| d.len()).sum::<usize>();
    eprintln!(
        "stored bytes, {plain1} objects: plain {}, encrypted {}",
        bytes(&v.fx.repo),
        bytes(&v.vault)
    );
    add_attachments(common::server(), &mut v.fx.store, 4, 7).expect("adding");
    v.fx.backup_ok();
    let second = v.backup(&v.writer);
    let (plain2, vault2) = (object_files(&v.fx.repo), object_files(&v.vault));
    assert!(
        plain2 > plain1 && plain2 - plain1 < plain1,
        "{plain1} {plain2}"
    );
    assert_eq!(vault2 - vault1, plain2 - plain1, "the same objects are new");
    let verify = v.ok(&v.reader, &["verify", &second, "--json"]);
    assert_eq!(verify["ok"], true, "{verify}");

    // Prune's garbage collection reads the sealed names back: it deletes
    // what only the first set needed, as it does in the clear.
    let out = v.run(&v.writer, &["prune", "--keep-last", "1"]);
    assert_eq!(
        out.code,
        Some(2),
        "prune needs the identity: {}",
        out.stderr
    );
    v.ok(&v.reader, &["prune", "--keep-last", "1", "--json"]);
    v.fx.run_with(&v.fx.config, &["prune", "--keep-last", "1", "--json"]);
    assert_eq!(object_files(&v.vault), object_files(&v.fx.repo));
    assert!(object_files(&v.vault) < vault2, "something was deleted");
    let verify = v.ok(&v.reader, &["verify", &second, "--json"]);
    assert_eq!(verify["ok"], true, "after prune: {verify}");
}

#[test]
fn copies_into_an_encrypted_repository_and_back_verify() {
    let v = Vault::new();
    let set = v.fx.backup_ok();
    let out = v.fx.run_with(&v.writer, &["copy", &set, "--to", "vault"]);
    assert_eq!(out.code, Some(0), "copy in: {}", out.stderr);
    assert!(object_files(&v.vault) > 0);
    v.ok(&v.reader, &["verify", &set, "--json"]);
    v.ok(&v.reader, &["copy", &set, "--to", "back", "--json"]);
    let back = v.back.display().to_string();
    let verify = v.fx.run_with(
        &v.reader,
        &["--repository", &back, "verify", &set, "--json"],
    );
    assert_eq!(
        verify.code,
        Some(0),
        "verify the copy back: {}",
        verify.stderr
    );
    assert_eq!(object_files(&v.back), object_files(&v.fx.repo));

    // A flipped byte in a stored (encrypted) object: verify finds it.
    let (name, mut data) = files(&v.vault.join("objects"))
        .into_iter()
        .find(|(n, d)| !n.starts_with('.') && d.len() > 1100)
        .expect("an object");
    let at = data.len() - 20;
    data[at] ^= 0x01;
    fs::write(v.vault.join("objects").join(&name), &data).unwrap();
    let verify = v.run(&v.reader, &["verify", &set, "--json"]);
    assert_eq!(verify.code, Some(3), "a flipped byte: {}", verify.stderr);
}

#[test]
fn an_encrypted_s3_repository_holds_no_plaintext_and_is_not_warned_about() {
    if !available("an_encrypted_s3_repository_holds_no_plaintext_and_is_not_warned_about") {
        return;
    }
    let server = shared_seaweed();
    let fx = Fx::new(V1, |_| {});
    let (r, i) = key_files(fx.dir.path());
    let secret = fx.dir.path().join("s3.key");
    fs::write(&secret, format!("{SECRET_KEY}\n")).unwrap();
    let (plain_bucket, sealed_bucket) = (server.bucket("kcplain"), server.bucket("kcsealed"));
    let section = |name: &str, bucket: &str, keys: &str| {
        format!(
            "\n[repositories.{name}]\nurl = {}\nendpoint = {}\naccess_key_id = {}\n\
             secret_access_key_file = {}\n{keys}",
            toml_string(&format!("s3://{bucket}/kc")),
            toml_string(&server.endpoint),
            toml_string(ACCESS_KEY),
            toml_string(&secret.display().to_string()),
        )
    };
    let keys = format!(
        "encryption = \"age\"\nrecipients_file = {}\nidentity_file = {}\n",
        toml_string(&r.display().to_string()),
        toml_string(&i.display().to_string())
    );
    let text = section("plain", &plain_bucket, "") + &section("sealed", &sealed_bucket, &keys);
    let config = fx.config_with("s3", &fx.repo, &text);
    let warning = "is not encrypted";

    let plain = fx.run_with(&config, &["--repository", "plain", "backup", "--json"]);
    assert_eq!(plain.code, Some(0), "{}", plain.stderr);
    assert!(plain.stderr.contains(warning), "{}", plain.stderr);
    let sealed = fx.run_with(&config, &["--repository", "sealed", "backup", "--json"]);
    assert_eq!(sealed.code, Some(0), "{}", sealed.stderr);
    assert!(!sealed.stderr.contains(warning), "{}", sealed.stderr);
    let set = sealed.set().unwrap();

    let client = server.client();
    let mut hashes = Vec::new();
    client
        .list_v2(&plain_bucket, "kc/objects/", &mut |o| {
            let name = o.key.rsplit('/').next().unwrap_or("").to_owned();
            hashes.push(name.split('.').next().unwrap_or("").to_owned());
            Ok(())
        })
        .unwrap();
    assert!(hashes.iter().all(|h| h.len() == 64) && hashes.len() > 10);
    let mut keys = Vec::new();
    client
        .list_v2(&sealed_bucket, "kc/", &mut |o| {
            keys.push(o.key);
            Ok(())
        })
        .unwrap();
    let text = NASTY_BODY.lines().next().unwrap().as_bytes();
    for key in &keys {
        let mut data = Vec::new();
        std::io::Read::read_to_end(
            &mut client.get(&sealed_bucket, key, None).unwrap().reader,
            &mut data,
        )
        .unwrap();
        assert!(!holds(&data, text), "{key} holds message text");
        for h in &hashes {
            assert!(!key.contains(h.as_str()), "{key} names a content hash");
            assert!(!holds(&data, h.as_bytes()), "{key} holds a content hash");
        }
    }
    let verify = fx.run_with(
        &config,
        &["--repository", "sealed", "verify", &set, "--json"],
    );
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
}
