//! A timer that fires when work shows no progress for too long: it bounds
//! waits on a database server that may hang (stopped, deadlocked) without
//! ever closing its connections.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Shared by the working thread ([`Watchdog::touch`], [`Watchdog::stop`])
/// and a watching thread ([`Watchdog::watch`]), e.g. in `thread::scope`.
pub struct Watchdog {
    limit: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    last: Instant,
    /// Our own work is going on: the time does not count.
    paused: bool,
    stopped: bool,
    fired: bool,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            limit,
            state: Mutex::new(State {
                last: Instant::now(),
                paused: false,
                stopped: false,
                fired: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Waiting starts (again): the limit counts from now.
    pub fn touch(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.last = Instant::now();
            s.paused = false;
        }
        self.wake.notify_all();
    }

    /// Until the next [`Watchdog::touch`] the time is ours (writing what
    /// was read, a snapshot), not the watched party's, and does not count.
    pub fn pause(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.paused = true;
        }
    }

    /// The work is over; [`Watchdog::watch`] returns without firing.
    pub fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stopped = true;
        }
        self.wake.notify_all();
    }

    /// Whether the limit was reached.
    pub fn fired(&self) -> bool {
        self.state.lock().map(|s| s.fired).unwrap_or(false)
    }

    /// Blocks until [`Watchdog::stop`], or until no [`Watchdog::touch`]
    /// came for the limit: then calls `on_expiry` (once) and returns.
    pub fn watch(&self, on_expiry: impl FnOnce()) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        loop {
            if s.stopped {
                return;
            }
            if s.paused {
                s = match self.wake.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                continue;
            }
            let due = s.last + self.limit;
            let now = Instant::now();
            if now >= due {
                s.fired = true;
                drop(s);
                on_expiry();
                return;
            }
            s = match self.wake.wait_timeout(s, due - now) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_without_progress_and_not_after_stop() {
        let dog = Watchdog::new(Duration::from_millis(50));
        let mut called = false;
        dog.watch(|| called = true);
        assert!(called && dog.fired());

        let dog = Watchdog::new(Duration::from_secs(3600));
        std::thread::scope(|scope| {
            let watcher = scope.spawn(|| dog.watch(|| panic!("fired")));
            dog.touch();
            dog.stop();
            watcher.join().unwrap();
        });
        assert!(!dog.fired());

        // Paused time does not count.
        let dog = Watchdog::new(Duration::from_millis(20));
        std::thread::scope(|scope| {
            dog.pause();
            let watcher = scope.spawn(|| dog.watch(|| panic!("fired while paused")));
            std::thread::sleep(Duration::from_millis(100));
            dog.stop();
            watcher.join().unwrap();
        });
        assert!(!dog.fired());
    }
}
