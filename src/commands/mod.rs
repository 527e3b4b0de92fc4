//! One file per command: each takes settings and options, does the work,
//! and returns a typed report; rendering and exit codes are the caller's.

pub mod backup;
pub mod copy;
pub mod demo;
pub mod drill;
pub mod list;
pub mod prune;
pub mod restore;
pub mod upgrade;
pub mod verify;

/// The test-only variable naming the point a run stops itself at (SIGSTOP),
/// so a test can SIGKILL it exactly there. Unset in production.
pub use crate::signals::PAUSE_ENV;

/// Stops this process when [`PAUSE_ENV`] names `point` (one of `known`).
pub(crate) fn pause_at(known: &[&str], point: &str) {
    debug_assert!(known.contains(&point), "{point}");
    crate::signals::pause_for_test(point);
}
