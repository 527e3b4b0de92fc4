//! The database server SIGKILLed while a backup's dump is held up (this
//! binary's own throwaway server, so no other test loses its database):
//! exit 1 with one message about the dump, nothing published, nothing left
//! behind, the earlier set still verifies; a backup with the server still
//! down fails the same way. (A hung server and its timeouts are issue 8
//! item 5.)

mod common;
mod faultkit;

use std::fs;

use faultkit::{Fx, HeldDump, V1};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn a_database_killed_mid_dump_fails_the_backup_cleanly() {
    let fx = Fx::new(V1, |_| {});
    let first = fx.backup_ok();
    let held = HeldDump::new(fx.dir.path());
    let config = fx.config_with("held", &fx.repo, &held.toml());
    let mut bg = fx.spawn_with(&config, &["backup", "--json"]);
    assert!(
        bg.wait_for(|| held.pausing.exists()),
        "the dump never paused"
    );
    let server = common::server().mariadbd_pid();
    kill(Pid::from_raw(server as i32), Signal::SIGKILL).unwrap();
    fs::write(&held.release, "").unwrap();
    let out = bg.finish();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let msg = out.assert_one_message("database killed");
    assert!(msg.contains("dump"), "{msg}");
    assert_eq!(fx.sets(), vec![first.clone()], "nothing published");
    faultkit::wait_gone(&fx.tmp);
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
    // The set on disk does not need the server.
    fx.assert_verifies(std::slice::from_ref(&first), "database killed");
    // The server is still down: the next backup says so and leaves nothing.
    let next = fx.run(&["backup", "--json"]);
    assert_eq!(next.code, Some(1), "{}", next.stderr);
    next.assert_one_message("database down");
    assert_eq!(fx.sets(), vec![first]);
    assert!(fx.leftovers().is_empty(), "{:?}", fx.leftovers());
}
