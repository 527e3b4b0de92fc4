//! `[notify]`: healthchecks-style pings. `<url>/start` when an operation
//! begins, `<url>/<exit code>` when it ends (0 = success), the error as the
//! body. A ping never fails the operation: a short time limit, a warning.

use std::time::Duration;

/// The time limit of one ping that sets none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// The body is for humans reading the check's log; keep it short.
const MAX_BODY: usize = 10_000;

/// One check's URL and time limit.
#[derive(Debug, Clone)]
pub struct Pinger {
    base: String,
    agent: ureq::Agent,
}

impl Pinger {
    pub fn new(url: &str, timeout_seconds: Option<u64>) -> Pinger {
        let limit = Duration::from_secs(timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .user_agent(concat!("kcbackup/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Pinger {
            base: url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub fn start(&self) {
        self.ping("start", "");
    }

    /// `exit_code` 0 is a success; anything else a failure.
    pub fn finish(&self, exit_code: i32, message: &str) {
        self.ping(&exit_code.to_string(), message);
    }

    fn ping(&self, what: &str, body: &str) {
        let url = format!("{}/{what}", self.base);
        let body = truncate(body, MAX_BODY);
        if let Err(e) = self.agent.post(&url).send(body) {
            // The URL may carry a secret (the check's key): never print it.
            eprintln!("kcbackup: warning: the {what} ping to the [notify] URL failed: {e}");
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn an_unreachable_url_only_warns_within_the_time_limit() {
        // A port nothing listens on: refused at once, never an error.
        let p = Pinger::new("http://127.0.0.1:9/check", Some(2));
        let started = std::time::Instant::now();
        p.start();
        p.finish(1, "boom");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
