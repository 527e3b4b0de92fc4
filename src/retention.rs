//! The retention policy as a pure function: which sets `prune` keeps, and
//! every rule that keeps each one (restic's `forget` semantics; see
//! [`decide`]). The caller supplies the sets and the wall clock of the buckets.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Months, NaiveDateTime, Timelike, Utc};

/// `[retention] keep_incomplete` when not set.
pub const DEFAULT_KEEP_INCOMPLETE: u32 = 3;

/// What the rules say; zero or empty means "this rule keeps nothing".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    pub keep_within: Option<Within>,
    pub keep_tags: Vec<String>,
    /// Not a rule: how many newer complete sets make an incomplete one go.
    pub keep_incomplete: u32,
}

impl Policy {
    /// The default an administrator expects: 7 daily, 4 weekly, 6 monthly,
    /// `pre-upgrade` sets kept.
    pub fn recommended() -> Policy {
        Policy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            keep_tags: vec!["pre-upgrade".to_owned()],
            keep_incomplete: DEFAULT_KEEP_INCOMPLETE,
            ..Policy::default()
        }
    }

    /// Whether any rule keeps anything (a policy without one would remove
    /// everything but the newest complete set: refused).
    pub fn has_rule(&self) -> bool {
        self.keep_last > 0
            || self.buckets().iter().any(|(_, n)| *n > 0)
            || self.keep_within.is_some_and(|w| !w.is_zero())
            || !self.keep_tags.is_empty()
    }

    /// The rules in words, for reports: `["daily 7", "tag pre-upgrade"]`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.keep_last > 0 {
            out.push(format!("last {}", self.keep_last));
        }
        for (bucket, n) in self.buckets() {
            if n > 0 {
                out.push(format!("{} {n}", bucket.name()));
            }
        }
        if let Some(w) = self.keep_within.filter(|w| !w.is_zero()) {
            out.push(format!("within {w}"));
        }
        for t in &self.keep_tags {
            out.push(format!("tag {t}"));
        }
        out
    }

    fn buckets(&self) -> [(Bucket, u32); 5] {
        [
            (Bucket::Hourly, self.keep_hourly),
            (Bucket::Daily, self.keep_daily),
            (Bucket::Weekly, self.keep_weekly),
            (Bucket::Monthly, self.keep_monthly),
            (Bucket::Yearly, self.keep_yearly),
        ]
    }
}

/// A calendar duration as restic writes it: `1y6m`, `14d`, `2w`, `36h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Within {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Within {
    /// Parses `<n><unit>...` with units y, m (months), w, d, h.
    pub fn parse(text: &str) -> Result<Within, String> {
        let bad = || {
            format!(
                "{text:?} is not a duration (numbers with units y, m, w, d, h, such as \"14d\" or \"1y6m\")"
            )
        };
        let mut w = Within::default();
        let mut digits = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            let slot = match c {
                'y' => &mut w.years,
                'm' => &mut w.months,
                'w' => {
                    w.days = w
                        .days
                        .checked_add(n.checked_mul(7).ok_or_else(bad)?)
                        .ok_or_else(bad)?;
                    any = true;
                    continue;
                }
                'd' => &mut w.days,
                'h' => &mut w.hours,
                _ => return Err(bad()),
            };
            *slot = slot.checked_add(n).ok_or_else(bad)?;
            any = true;
        }
        if !digits.is_empty() || !any {
            return Err(bad());
        }
        Ok(w)
    }

    pub fn is_zero(&self) -> bool {
        *self == Within::default()
    }

    /// `newest` minus this duration, calendar-wise (months are months);
    /// `None` when that is before any representable time (keep everything).
    fn cutoff(&self, newest: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        newest
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(chrono::Days::new(u64::from(self.days)))?
            .checked_sub_signed(chrono::TimeDelta::try_hours(i64::from(self.hours))?)
    }
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// What the policy knows of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Complete,
    Incomplete,
    /// The manifest cannot be read: nothing is known but the id.
    Damaged,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    /// When the backup started (for a damaged set: the time in its id).
    pub time: DateTime<Utc>,
    pub kind: Kind,
    pub tag: Option<String>,
}

/// A calendar bucket rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bucket {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }

    /// The bucket a wall-clock time falls in (weeks are ISO weeks, whose
    /// year may differ from the calendar year around New Year).
    fn key(self, t: NaiveDateTime) -> (i32, u32, u32, u32) {
        match self {
            Bucket::Hourly => (t.year(), t.month(), t.day(), t.hour()),
            Bucket::Daily => (t.year(), t.month(), t.day(), 0),
            Bucket::Weekly => (t.iso_week().year(), t.iso_week().week(), 0, 0),
            Bucket::Monthly => (t.year(), t.month(), 0, 0),
            Bucket::Yearly => (t.year(), 0, 0, 0),
        }
    }
}

/// Why a set is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Last,
    Bucket(Bucket),
    /// Fewer buckets than asked for: the oldest complete set is kept too.
    Oldest(Bucket),
    Within(Within),
    Tag(String),
    /// Kept by no rule, but the newest complete set is never removed.
    NewestComplete,
    /// Fewer than `keep_incomplete` newer complete sets exist.
    Incomplete {
        newer_complete: u32,
        keep: u32,
    },
    Damaged,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last => f.write_str("last"),
            Reason::Bucket(b) => f.write_str(b.name()),
            Reason::Oldest(b) => write!(f, "oldest {}", b.name()),
            Reason::Within(w) => write!(f, "within {w}"),
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::NewestComplete => f.write_str("newest complete"),
            Reason::Incomplete {
                newer_complete,
                keep,
            } => write!(
                f,
                "incomplete: {newer_complete} of {keep} newer complete sets"
            ),
            Reason::Damaged => f.write_str("damaged: only forget removes it"),
        }
    }
}

/// The verdict on one set: kept when `reasons` is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Wall-clock time of an instant in the zone buckets are counted in.
pub type WallClock<'a> = &'a dyn Fn(DateTime<Utc>) -> NaiveDateTime;

/// The host's local time zone (DST included).
pub fn host_local(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&chrono::Local).naive_local()
}

/// UTC (`--utc`).
pub fn utc(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// Applies `policy` to `sets`; one decision per set, in the order given.
///
/// - A set kept by any rule is kept (union of rules).
/// - `keep_last N`: the N newest complete sets.
/// - `keep_hourly/daily/weekly/monthly/yearly N`: walking from the newest
///   complete set back, the newest set of each of the N most recent calendar
///   buckets (hour, day, ISO week, month, year of `clock`) that hold a
///   complete set. When fewer than N buckets exist, the oldest complete set
///   is kept too (`oldest daily`, ...), as restic does, so history keeps its start.
/// - `keep_within D`: complete sets at most D older than the newest complete
///   set (not than now: a paused timer does not empty the repository).
/// - `keep_tags`: complete sets carrying one of the tags.
/// - Incomplete sets never count for or fill any rule; one is kept until
///   `keep_incomplete` newer complete sets exist.
/// - Damaged sets (unreadable manifest) are always kept: only `forget`
///   removes them. The newest complete set is never removed.
pub fn decide(sets: &[Candidate], policy: &Policy, clock: WallClock<'_>) -> Vec<Decision> {
    let mut reasons: Vec<BTreeSet<Reason>> = vec![BTreeSet::new(); sets.len()];
    // Newest first; ids break ties (same second: `-2` is the later one).
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by(|&a, &b| (sets[b].time, &sets[b].id).cmp(&(sets[a].time, &sets[a].id)));
    let complete: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| sets[i].kind == Kind::Complete)
        .collect();

    for &i in complete.iter().take(policy.keep_last as usize) {
        reasons[i].insert(Reason::Last);
    }
    for (bucket, count) in policy.buckets() {
        if count == 0 {
            continue;
        }
        let mut left = count;
        let mut last = None;
        for &i in &complete {
            if left == 0 {
                break;
            }
            let key = bucket.key(clock(sets[i].time));
            if last != Some(key) {
                reasons[i].insert(Reason::Bucket(bucket));
                left -= 1;
                last = Some(key);
            }
        }
        if left > 0
            && let Some(&oldest) = complete.last()
            && !reasons[oldest].contains(&Reason::Bucket(bucket))
        {
            reasons[oldest].insert(Reason::Oldest(bucket));
        }
    }
    if let Some(within) = policy.keep_within.filter(|w| !w.is_zero())
        && let Some(&newest) = complete.first()
    {
        let cutoff = within.cutoff(sets[newest].time);
        for &i in &complete {
            if cutoff.is_none_or(|c| sets[i].time >= c) {
                reasons[i].insert(Reason::Within(within));
            }
        }
    }
    for &i in &complete {
        if let Some(tag) = &sets[i].tag
            && policy.keep_tags.contains(tag)
        {
            reasons[i].insert(Reason::Tag(tag.clone()));
        }
    }
    if let Some(&newest) = complete.first()
        && reasons[newest].is_empty()
    {
        reasons[newest].insert(Reason::NewestComplete);
    }
    let mut newer_complete = 0u32;
    for &i in &order {
        match sets[i].kind {
            Kind::Complete => newer_complete += 1,
            Kind::Incomplete if newer_complete < policy.keep_incomplete => {
                reasons[i].insert(Reason::Incomplete {
                    newer_complete,
                    keep: policy.keep_incomplete,
                });
            }
            Kind::Incomplete => {}
            Kind::Damaged => {
                reasons[i].insert(Reason::Damaged);
            }
        }
    }
    sets.iter()
        .zip(reasons)
        .map(|(s, r)| Decision {
            id: s.id.clone(),
            reasons: r.into_iter().collect(),
        })
        .collect()
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
