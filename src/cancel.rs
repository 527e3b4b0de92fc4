//! A flag one half of an overlapped backup raises when it fails, so that
//! the other half (the dump, or the attachment capture running alongside
//! it) stops at its next check instead of running on for nothing.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cheap to clone; every clone sees the same flag. The default is never raised.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// The error a check returns once the flag is raised: the other half's
/// error is the one to report.
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stopped because the other half of the backup failed")
    }
}

impl std::error::Error for Cancelled {}

impl Cancel {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// `Err(Cancelled)` once raised: call it where `signals::check` is called.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        Ok(())
    }

    /// Whether `err` is only this flag's doing.
    pub fn caused(err: &anyhow::Error) -> bool {
        err.chain().any(|c| c.is::<Cancelled>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_flag_is_seen_by_every_clone() {
        let a = Cancel::default();
        let b = a.clone();
        assert!(b.check().is_ok());
        a.raise();
        let err = b.check().unwrap_err().context("while capturing");
        assert!(Cancel::caused(&err));
        assert!(!Cancel::caused(&anyhow::anyhow!("other")));
    }
}
