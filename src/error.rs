//! Error kinds that decide the exit code; everything else travels as an
//! `anyhow::Error` with its context chain.

use std::fmt;

/// Documented exit codes (see `--help` and README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Ok = 0,
    /// The run failed; nothing new was published.
    Failure = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// A set was written but is incomplete, or a check found problems.
    Incomplete = 3,
    /// Interrupted by SIGINT, after cleanup.
    Interrupted = 130,
    /// Terminated by SIGTERM or SIGHUP, after cleanup.
    Terminated = 143,
}

/// A usage or configuration mistake: exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Shorthand for returning a configuration error.
pub fn config_error<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(ConfigError(msg.into()).into())
}

/// The set's stored data is damaged or missing (a restorable finding, a
/// missing or corrupt chunk or object, a checksum mismatch): exit code 3,
/// as verify and drill report the same damage. Not for problems of the
/// restore's target (those stay 1 or 2).
#[derive(Debug)]
pub struct Damaged(pub String);

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

impl From<anyhow::Error> for Damaged {
    fn from(e: anyhow::Error) -> Self {
        Damaged(format!("{e:#}"))
    }
}

/// Shorthand for returning a damaged-data error.
pub fn damaged<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Damaged(msg.into()).into())
}

/// Whether `cause` says the set's data is damaged, also when it travels
/// inside an `io::Error` (whose `source()` skips the error it wraps).
fn is_damage(cause: &(dyn std::error::Error + 'static)) -> bool {
    let direct = |e: &(dyn std::error::Error + 'static)| {
        e.is::<Damaged>() || e.is::<crate::dump::reader::ChunkProblem>()
    };
    direct(cause)
        || cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| direct(inner))
}

/// The run was stopped by a signal; cleanup has run.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(sig) => write!(f, "interrupted by {}", sig.as_str()),
            Err(_) => write!(f, "interrupted by signal {}", self.0),
        }
    }
}

impl std::error::Error for Interrupted {}

/// Maps an error to its exit code by looking through its context chain.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return Exit::Usage;
        }
        if is_damage(cause) {
            return Exit::Incomplete;
        }
        if let Some(Interrupted(sig)) = cause.downcast_ref::<Interrupted>() {
            return if *sig == libc::SIGINT {
                Exit::Interrupted
            } else {
                Exit::Terminated
            };
        }
    }
    Exit::Failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn damage_exits_3_also_inside_an_io_error_and_under_context() {
        let direct: anyhow::Error = Damaged("chunk x is missing".into()).into();
        assert_eq!(
            exit_for(&direct.context("while restoring")),
            Exit::Incomplete
        );
        let wrapped = std::io::Error::other(Damaged("bad".into()));
        let e = Err::<(), _>(wrapped)
            .context("while reading the dump")
            .unwrap_err();
        assert_eq!(exit_for(&e), Exit::Incomplete);
        // A target's problem is not damage.
        let target = anyhow::anyhow!("database server not answering");
        assert_eq!(exit_for(&target), Exit::Failure);
        assert_eq!(exit_for(&ConfigError("x".into()).into()), Exit::Usage);
    }
}
