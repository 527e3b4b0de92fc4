//! Which run owns a leftover: a process is named by its pid AND its start
//! time, so a pid reused after a crash is never taken for the dead owner.

use std::fmt;
use std::fs;

/// A process as it was when it was named: `pid` and `start` (clock ticks
/// after boot, field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub pid: u32,
    pub start: u64,
}

impl Stamp {
    /// This process.
    pub fn current() -> Stamp {
        let pid = std::process::id();
        Stamp {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// True while the process runs (not a zombie) and is the one named.
    /// A start of 0 means "unknown" and matches any process with the pid.
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => {
                !matches!(state, 'Z' | 'X') && (self.start == 0 || self.start == start)
            }
            None => false,
        }
    }

    /// Parses `PID-START` or a bare `PID` (start unknown), as written by Display.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.splitn(2, '-');
        let pid = parts.next()?.parse().ok()?;
        let start = match parts.next() {
            Some(s) => s.parse().ok()?,
            None => 0,
        };
        Some(Stamp { pid, start })
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pid, self.start)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// State and start time from `/proc/PID/stat`; the command name in
/// parentheses may hold spaces, so fields are counted after its `)`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 3.. follow; the start time is field 22, the 20th after `)`.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_its_owner() {
        let me = Stamp::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert_eq!(Stamp::parse(&me.to_string()), Some(me));
        let reused = Stamp {
            start: me.start + 1,
            ..me
        };
        assert!(!reused.is_alive());
        assert!(Stamp::parse(&me.pid.to_string()).unwrap().is_alive());
        assert_eq!(Stamp::parse("x-1"), None);
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Stamp { pid, start: 0 }.is_alive());
    }
}
