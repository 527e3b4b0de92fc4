//! One file per command: each takes settings and options, does the work,
//! and returns a typed report; rendering and exit codes are the caller's.

pub mod backup;
pub mod demo;
pub mod drill;
pub mod list;
pub mod prune;
pub mod restore;
pub mod upgrade;
pub mod verify;
