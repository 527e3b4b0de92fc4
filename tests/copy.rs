//! `kcbackup copy` between two local repositories, through the storage
//! interface: only what the target lacks is sent, the copy verifies on the
//! target, a copy SIGKILLed at its pause points (`KCBACKUP_TEST_PAUSE_AT`)
//! leaves no set there and the next copy sends exactly the remainder, and
//! a corrupt object in the source is never copied.

mod common;
mod faultkit;

use std::fs;
use std::path::{Path, PathBuf};

use common::is_stopped;
use faultkit::{Bg, Fx, V1, published_sets};
use kcbackup::commands::PAUSE_ENV;
use kcbackup::generator::add_attachments;
use nix::sys::signal::Signal;
use serde_json::Value;

/// A config like the fixture's with `[repositories.offsite]` at `target`.
fn with_offsite(fx: &Fx, name: &str, target: &Path) -> PathBuf {
    let extra = format!(
        "\n[repositories.offsite]\npath = {}\n",
        toml_string(&target.display().to_string())
    );
    fx.config_with(name, &fx.repo, &extra)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The stored objects of a local repository: count and bytes (no temporaries).
fn stored(repo: &Path) -> (u64, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for shard in fs::read_dir(repo.join("objects"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if shard.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            n += 1;
            bytes += f.metadata().map_or(0, |m| m.len());
        }
    }
    (n, bytes)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

fn copy_ok(fx: &Fx, config: &Path, args: &[&str]) -> Value {
    let out = fx.run_with(config, args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    out.json()
}

#[test]
fn a_copy_sends_only_what_the_target_lacks_and_verifies_there() {
    let mut fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let target = fx.dir.path().join("offsite");
    let config = with_offsite(&fx, "copy", &target);

    let out = fx.run_with(&config, &["copy", "latest", "--to", "ofsite"]);
    assert_eq!(out.code, Some(2), "a misspelt name: {}", out.stderr);
    assert!(
        out.stderr.contains("no repository named \"ofsite\""),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "nothing created for a misspelt name");

    let one = copy_ok(
        &fx,
        &config,
        &["copy", "latest", "--to", "offsite", "--json"],
    );
    assert_eq!(one["sets"][0]["outcome"], "copied", "{one}");
    let (objects, object_bytes) = stored(&target);
    assert_eq!(num(&one, "objects_sent"), objects, "{one}");
    assert_eq!(num(&one, "objects_present"), 0, "{one}");
    assert!(
        num(&one, "bytes_sent") > object_bytes,
        "objects and set files: {one}"
    );
    assert_eq!(published_sets(&target), vec![first.clone()]);
    let verify = fx.run_with(
        &config,
        &["--repository", "offsite", "verify", "latest", "--json"],
    );
    assert_eq!(
        verify.code,
        Some(0),
        "verify on the target: {}",
        verify.stderr
    );

    // A second night: the new set shares most objects with the first.
    add_attachments(common::server(), &mut fx.store, 4, 7).expect("adding");
    let second = fx.backup_ok();
    let all = copy_ok(
        &fx,
        &config,
        &["copy", "--all", "--to", "offsite", "--json"],
    );
    let outcomes: Vec<(&str, &str)> = all["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["set"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        vec![(first.as_str(), "present"), (second.as_str(), "copied")]
    );
    let (after, after_bytes) = stored(&target);
    assert_eq!(num(&all, "objects_sent"), after - objects, "{all}");
    assert!(
        num(&all, "objects_present") >= objects / 2,
        "deduplicated: {all}"
    );
    assert!(
        num(&all, "bytes_sent") >= after_bytes - object_bytes,
        "{all}"
    );
    let verify = fx.run_with(
        &config,
        &[
            "--repository",
            &target.display().to_string(),
            "verify",
            &second,
        ],
    );
    assert_eq!(
        verify.code,
        Some(0),
        "verify on the target: {}",
        verify.stderr
    );

    // Nothing left to send.
    let again = copy_ok(
        &fx,
        &config,
        &["copy", "--all", "--to", "offsite", "--json"],
    );
    assert_eq!(
        (num(&again, "bytes_sent"), num(&again, "objects_sent")),
        (0, 0),
        "{again}"
    );
}

#[test]
fn a_killed_copy_publishes_nothing_and_the_next_sends_only_the_remainder() {
    let fx = Fx::new(V1, |spec| spec.messages_per_user *= 2);
    let set = fx.backup_ok();
    // The whole copy, uninterrupted, for the reference numbers.
    let whole_target = fx.dir.path().join("whole");
    let whole_config = with_offsite(&fx, "whole", &whole_target);
    let whole = copy_ok(
        &fx,
        &whole_config,
        &["copy", &set, "--to", "offsite", "--json"],
    );
    let (total_objects, total_object_bytes) = stored(&whole_target);
    let file_bytes = num(&whole["sets"][0], "file_bytes");
    assert_eq!(
        num(&whole, "bytes_sent"),
        total_object_bytes + file_bytes,
        "{whole}"
    );
    assert!(
        total_objects >= 20,
        "enough objects to stop in between: {whole}"
    );

    for point in ["copy-objects-first", "copy-objects-half", "copy-set-staged"] {
        let target = fx.dir.path().join(format!("t-{point}"));
        let config = with_offsite(&fx, point, &target);
        let mut cmd = fx.command(&config, &["copy", &set, "--to", "offsite", "--json"]);
        cmd.env(PAUSE_ENV, point);
        let mut bg = Bg::spawn(cmd, false);
        let pid = bg.child.id();
        assert!(
            bg.wait_for(|| is_stopped(pid)),
            "copy never reached {point}"
        );
        let (landed, landed_bytes) = stored(&target);
        bg.signal(Signal::SIGKILL);
        let out = bg.finish();
        assert_eq!(out.signal, Some(9), "{point}: {}", out.stderr);
        assert!(
            published_sets(&target).is_empty(),
            "{point}: a set appeared on the target"
        );
        match point {
            "copy-objects-first" => {
                assert!(landed > 0 && landed < total_objects, "{point}: {landed}")
            }
            "copy-objects-half" => assert!(
                landed * 2 >= total_objects && landed < total_objects,
                "{point}: {landed}"
            ),
            _ => assert_eq!(landed, total_objects, "{point}"),
        }

        let next = copy_ok(&fx, &config, &["copy", &set, "--to", "offsite", "--json"]);
        eprintln!(
            "{point}: {landed} of {total_objects} objects had landed; the next copy sent {} bytes of {}",
            num(&next, "bytes_sent"),
            num(&whole, "bytes_sent")
        );
        assert_eq!(num(&next, "objects_present"), landed, "{point}: {next}");
        assert_eq!(
            num(&next, "objects_sent"),
            total_objects - landed,
            "{point}: {next}"
        );
        assert_eq!(
            num(&next, "bytes_sent"),
            total_object_bytes - landed_bytes + file_bytes,
            "{point}: only the remainder is sent: {next}"
        );
        if point == "copy-set-staged" {
            let left = next["removed_leftovers"].to_string();
            assert!(left.contains(&format!(".work-{set}")), "{point}: {next}");
        }
        assert_eq!(published_sets(&target), vec![set.clone()]);
        let verify = fx.run_with(&config, &["--repository", "offsite", "verify", &set]);
        assert_eq!(
            verify.code,
            Some(0),
            "{point}: verify on the target: {}",
            verify.stderr
        );
        assert!(
            fs::read_dir(target.join("objects/.tmp")).map_or(true, |mut d| d.next().is_none()),
            "{point}: staged objects left behind"
        );
    }
}

#[test]
fn a_corrupt_object_in_the_source_is_not_copied_and_no_set_appears() {
    let fx = Fx::new(V1, |_| {});
    let set = fx.backup_ok();
    // Flip one byte of the largest stored object.
    let mut objects: Vec<PathBuf> = fs::read_dir(fx.repo.join("objects"))
        .unwrap()
        .flatten()
        .filter(|s| !s.file_name().to_string_lossy().starts_with('.'))
        .flat_map(|s| fs::read_dir(s.path()).unwrap().flatten().map(|f| f.path()))
        .collect();
    objects.sort_by_key(|p| fs::metadata(p).map_or(0, |m| m.len()));
    let victim = objects.pop().expect("an object");
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&victim, bytes).unwrap();
    let target = fx.dir.path().join("offsite");
    let config = with_offsite(&fx, "copy", &target);
    let out = fx.run_with(&config, &["copy", &set, "--to", "offsite", "--json"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["sets"][0]["outcome"], "failed", "{report}");
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let sha = name.trim_end_matches(".zst");
    assert!(
        report["sets"][0]["error"].as_str().unwrap().contains(sha),
        "{report}"
    );
    assert!(published_sets(&target).is_empty());
    let shard = &sha[..2];
    assert!(
        !target.join("objects").join(shard).join(&name).exists(),
        "the corrupt object was stored"
    );
}

#[test]
fn the_nightly_copy_goes_to_copy_to_and_prunes_the_target_by_its_own_policy() {
    let mut fx = Fx::new(V1, |_| {});
    let target = fx.dir.path().join("offsite");
    // Without [copy] to: nothing to do.
    let plain = with_offsite(&fx, "plain", &target);
    fx.backup_ok();
    let out = fx.run_with(&plain, &["copy", "latest", "--if-configured", "--prune"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!target.exists());

    let extra = format!(
        "\n[copy]\nto = \"offsite\"\n\n[repositories.offsite]\npath = {}\n\n\
         [repositories.offsite.retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n\
         keep_monthly = 0\nkeep_tags = []\n",
        toml_string(&target.display().to_string())
    );
    let config = fx.config_with("nightly", &fx.repo, &extra);
    let nightly = ["copy", "latest", "--if-configured", "--prune", "--json"];
    let first = copy_ok(&fx, &config, &nightly);
    assert_eq!(first["copy"]["sets"][0]["outcome"], "copied", "{first}");
    add_attachments(common::server(), &mut fx.store, 3, 11).expect("adding");
    let newest = fx.backup_ok();
    let second = copy_ok(&fx, &config, &nightly);
    assert_eq!(
        second["copy"]["sets"][0]["set"],
        newest.as_str(),
        "{second}"
    );
    assert_eq!(
        published_sets(&target),
        vec![newest.clone()],
        "the target keeps its last 1"
    );
    assert_eq!(fx.sets().len(), 2, "the source keeps its own");
    let verify = fx.run_with(&config, &["--repository", "offsite", "verify", &newest]);
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
}
