//! Progress reporting as a small trait the library owns; the binary plugs in
//! an indicatif bar on a terminal and nothing elsewhere (cron stays quiet).

use std::io::IsTerminal;

/// Receives progress of one phase at a time.
pub trait Progress: Send + Sync {
    /// A new phase begins; `total` in bytes when known.
    fn start(&self, phase: &str, total: Option<u64>);
    fn inc(&self, n: u64);
    fn finish(&self);
}

/// Shows nothing.
pub struct Hidden;

impl Progress for Hidden {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
}

/// An indicatif bar on stderr.
pub struct Bar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        } else {
            "{msg:>12} {spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(phase.to_string());
        if let Ok(mut slot) = self.bar.lock()
            && let Some(old) = slot.replace(bar)
        {
            old.finish_and_clear();
        }
    }
    fn inc(&self, n: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(n);
        }
    }
    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// Two phases running at once on one bar: the first `start` names it
/// `label`, later starts and every finish are ignored, the bytes of both
/// add up. The caller finishes the bar once both are done.
pub struct Joint<'a> {
    inner: &'a dyn Progress,
    label: &'a str,
    started: std::sync::atomic::AtomicBool,
}

impl<'a> Joint<'a> {
    pub fn new(inner: &'a dyn Progress, label: &'a str) -> Self {
        Joint {
            inner,
            label,
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Progress for Joint<'_> {
    fn start(&self, _: &str, _: Option<u64>) {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.inner.start(self.label, None);
        }
    }
    fn inc(&self, n: u64) {
        self.inner.inc(n);
    }
    fn finish(&self) {}
}

/// A bar when stderr is a terminal, otherwise nothing.
pub fn for_terminal() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bar {
            bar: std::sync::Mutex::new(None),
        })
    } else {
        Box::new(Hidden)
    }
}
