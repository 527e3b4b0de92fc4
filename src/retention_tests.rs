//! Policy tests at chosen times: DST changes in Europe/Berlin (a zone table
//! built here by hand: CET +1, CEST +2 from the last Sunday of March to
//! the last Sunday of October, switching at 01:00 UTC), New Year and the
//! ISO week 53 of 2026, buckets, within, tags, incomplete and damaged sets.

use chrono::{NaiveDate, TimeDelta, TimeZone};

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// 01:00 UTC on the last Sunday of `month`.
fn last_sunday_0100(year: i32, month: u32) -> DateTime<Utc> {
    let mut d = NaiveDate::from_ymd_opt(year, month, 31).unwrap();
    while d.weekday() != chrono::Weekday::Sun {
        d = d.pred_opt().unwrap();
    }
    Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).unwrap())
}

fn berlin(t: DateTime<Utc>) -> NaiveDateTime {
    let summer = t >= last_sunday_0100(t.year(), 3) && t < last_sunday_0100(t.year(), 10);
    t.naive_utc() + TimeDelta::hours(if summer { 2 } else { 1 })
}

#[test]
fn the_hand_built_berlin_zone_switches_when_germany_does() {
    assert_eq!(last_sunday_0100(2026, 3), at("2026-03-29T01:00:00Z"));
    assert_eq!(last_sunday_0100(2026, 10), at("2026-10-25T01:00:00Z"));
    assert_eq!(
        berlin(at("2026-03-29T00:59:00Z")).to_string(),
        "2026-03-29 01:59:00"
    );
    assert_eq!(
        berlin(at("2026-03-29T01:00:00Z")).to_string(),
        "2026-03-29 03:00:00"
    );
    assert_eq!(
        berlin(at("2026-10-25T00:30:00Z")).to_string(),
        "2026-10-25 02:30:00"
    );
    assert_eq!(
        berlin(at("2026-10-25T01:30:00Z")).to_string(),
        "2026-10-25 02:30:00"
    );
}

fn set(time: &str) -> Candidate {
    let t = at(time);
    Candidate {
        id: t.format("%Y%m%dT%H%M%SZ").to_string(),
        time: t,
        kind: Kind::Complete,
        tag: None,
    }
}

fn with(mut c: Candidate, kind: Kind, tag: Option<&str>) -> Candidate {
    c.kind = kind;
    c.tag = tag.map(str::to_owned);
    c
}

/// The kept sets (by the UTC time in their id) with their reasons.
fn kept(sets: &[Candidate], policy: &Policy, clock: WallClock<'_>) -> Vec<(String, Vec<String>)> {
    let decisions = decide(sets, policy, clock);
    assert_eq!(decisions.len(), sets.len());
    decisions
        .into_iter()
        .filter(|d| d.keep())
        .map(|d| (d.id, d.reasons.iter().map(ToString::to_string).collect()))
        .collect()
}

fn expect(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(id, r)| (id.to_string(), r.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        keep_incomplete: DEFAULT_KEEP_INCOMPLETE,
        ..Policy::default()
    };
    f(&mut p);
    p
}

#[test]
fn daily_buckets_follow_berlin_midnight_not_utc_around_spring_forward() {
    // 22:30 and 23:30 UTC on 28 March are 23:30 on the 28th and 00:30 on
    // the 29th in Berlin (still CET); 23:30 UTC on the 29th is 01:30 on
    // the 30th (CEST). 21:30 UTC on the 29th is 23:30 CEST on the 29th.
    let sets = [
        set("2026-03-28T12:00:00Z"),
        set("2026-03-28T22:30:00Z"),
        set("2026-03-28T23:30:00Z"),
        set("2026-03-29T21:30:00Z"),
        set("2026-03-29T23:30:00Z"),
    ];
    let p = policy(|p| p.keep_daily = 10);
    assert_eq!(
        kept(&sets, &p, &berlin),
        expect(&[
            // Three days for ten asked: the oldest is kept too.
            ("20260328T120000Z", &["oldest daily"]),
            ("20260328T223000Z", &["daily"]),
            ("20260329T213000Z", &["daily"]),
            ("20260329T233000Z", &["daily"]),
        ])
    );
    // In UTC the days are the 28th (newest: 23:30) and the 29th (23:30).
    assert_eq!(
        kept(&sets, &p, &utc),
        expect(&[
            ("20260328T120000Z", &["oldest daily"]),
            ("20260328T233000Z", &["daily"]),
            ("20260329T233000Z", &["daily"]),
        ])
    );
}

/// Sorts by id (the order `kept` returns), for readable expectations.
trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<(String, Vec<String>)> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[test]
fn the_repeated_hour_at_fall_back_is_one_hourly_bucket() {
    // 00:10 and 00:30 UTC are 02:10 and 02:30 CEST, 01:30 UTC is 02:30
    // CET: one wall hour (02), then 02:05 UTC is 03:05 CET.
    let sets = [
        set("2026-10-25T00:10:00Z"),
        set("2026-10-25T00:30:00Z"),
        set("2026-10-25T01:30:00Z"),
        set("2026-10-25T02:05:00Z"),
    ];
    let p = policy(|p| p.keep_hourly = 3);
    assert_eq!(
        kept(&sets, &p, &berlin),
        expect(&[
            // Two wall hours for three asked: the oldest is kept too.
            ("20261025T001000Z", &["oldest hourly"]),
            ("20261025T013000Z", &["hourly"]),
            ("20261025T020500Z", &["hourly"]),
        ])
    );
    // In UTC these are three hours (00, 01, 02): no "oldest" needed.
    assert_eq!(
        kept(&sets, &p, &utc),
        expect(&[
            ("20261025T003000Z", &["hourly"]),
            ("20261025T013000Z", &["hourly"]),
            ("20261025T020500Z", &["hourly"]),
        ])
    );
}

#[test]
fn iso_week_53_of_2026_spans_new_year_while_years_split() {
    // 2026 has 53 ISO weeks: week 53 runs from Monday 28 December 2026 to
    // Sunday 3 January 2027; 4 January 2027 starts week 1 of 2027.
    let sets = [
        set("2026-12-27T02:30:00Z"), // Sunday: week 52
        set("2026-12-31T02:30:00Z"), // week 53, year 2026
        set("2027-01-01T02:30:00Z"), // week 53, year 2027
        set("2027-01-04T02:30:00Z"), // week 1 of 2027
    ];
    assert_eq!(
        NaiveDate::from_ymd_opt(2027, 1, 1)
            .unwrap()
            .iso_week()
            .week(),
        53
    );
    let weekly = policy(|p| p.keep_weekly = 3);
    assert_eq!(
        kept(&sets, &weekly, &berlin),
        expect(&[
            ("20261227T023000Z", &["weekly"]),
            ("20270101T023000Z", &["weekly"]),
            ("20270104T023000Z", &["weekly"]),
        ])
    );
    let yearly = policy(|p| p.keep_yearly = 2);
    assert_eq!(
        kept(&sets, &yearly, &berlin),
        expect(&[
            ("20261231T023000Z", &["yearly"]),
            ("20270104T023000Z", &["yearly"]),
        ])
    );
    // Weekly and yearly together: the union, each set with all its rules.
    let both = policy(|p| {
        p.keep_weekly = 2;
        p.keep_yearly = 2;
    });
    assert_eq!(
        kept(&sets, &both, &berlin),
        expect(&[
            ("20261231T023000Z", &["yearly"]),
            ("20270101T023000Z", &["weekly"]),
            ("20270104T023000Z", &["weekly", "yearly"]),
        ])
    );
}

#[test]
fn new_year_in_berlin_comes_an_hour_before_utc() {
    // 23:30 UTC on 31 December is 00:30 on 1 January in Berlin.
    let sets = [
        set("2026-12-31T12:00:00Z"),
        set("2026-12-31T23:30:00Z"),
        set("2027-01-01T12:00:00Z"),
    ];
    let monthly = policy(|p| p.keep_monthly = 2);
    assert_eq!(
        kept(&sets, &monthly, &berlin),
        expect(&[
            ("20261231T120000Z", &["monthly"]),
            ("20270101T120000Z", &["monthly"]),
        ])
    );
    assert_eq!(
        kept(&sets, &monthly, &utc),
        expect(&[
            ("20261231T233000Z", &["monthly"]),
            ("20270101T120000Z", &["monthly"]),
        ])
    );
}

/// Nightly sets at 02:30 Berlin time from 1 September 2026 to 31 December
/// 2026 (DST ends on the way), under the shipped default.
#[test]
fn the_recommended_policy_over_four_months_of_nightly_sets() {
    let mut sets = Vec::new();
    let mut day = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let end = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
    while day <= end {
        // 02:30 wall time: 00:30 UTC in summer, 01:30 UTC in winter.
        let summer = day < NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        let utc_hour = if summer { 0 } else { 1 };
        let t = Utc.from_utc_datetime(&day.and_hms_opt(utc_hour, 30, 0).unwrap());
        assert_eq!(berlin(t).time().to_string(), "02:30:00");
        sets.push(Candidate {
            id: t.format("%Y%m%dT%H%M%SZ").to_string(),
            time: t,
            kind: Kind::Complete,
            tag: None,
        });
        day = day.succ_opt().unwrap();
    }
    // A pre-upgrade set in October, an incomplete night in between.
    sets.push(with(
        set("2026-10-10T09:00:00Z"),
        Kind::Complete,
        Some("pre-upgrade"),
    ));
    let i = sets
        .iter()
        .position(|s| s.id == "20261229T013000Z")
        .unwrap();
    sets[i].kind = Kind::Incomplete;
    sets.sort_by(|a, b| a.id.cmp(&b.id));

    let got = kept(&sets, &Policy::recommended(), &berlin);
    assert_eq!(
        got,
        expect(&[
            // Monthly: the newest set of September, October, November...
            ("20260930T003000Z", &["monthly"]),
            // ... and, six months asked, four found: the oldest too.
            ("20260901T003000Z", &["oldest monthly"]),
            ("20261010T090000Z", &["tag pre-upgrade"]),
            ("20261031T013000Z", &["monthly"]),
            ("20261130T013000Z", &["monthly"]),
            // Weekly: Sundays 13, 20, 27 December; the 31st is a Thursday.
            ("20261213T013000Z", &["weekly"]),
            ("20261220T013000Z", &["weekly"]),
            // Daily: 31, 30, 28, 27, 26, 25, 24 (29 is incomplete).
            ("20261224T013000Z", &["daily"]),
            ("20261225T013000Z", &["daily"]),
            ("20261226T013000Z", &["daily"]),
            ("20261227T013000Z", &["daily", "weekly"]),
            ("20261228T013000Z", &["daily"]),
            (
                "20261229T013000Z",
                &["incomplete: 2 of 3 newer complete sets"]
            ),
            ("20261230T013000Z", &["daily"]),
            ("20261231T013000Z", &["daily", "weekly", "monthly"]),
        ])
        .tap_sort()
    );
}

#[test]
fn keep_last_within_and_tags_make_a_union() {
    let sets = [
        with(
            set("2026-11-01T02:00:00Z"),
            Kind::Complete,
            Some("pre-upgrade"),
        ),
        set("2026-11-10T02:00:00Z"),
        set("2026-11-20T02:00:00Z"),
        set("2026-11-27T01:59:59Z"),
        set("2026-11-27T02:00:00Z"),
        set("2026-11-30T02:00:00Z"),
        set("2026-12-01T02:00:00Z"),
    ];
    let p = policy(|p| {
        p.keep_last = 2;
        p.keep_within = Some(Within::parse("4d").unwrap());
        p.keep_tags = vec!["pre-upgrade".into(), "other".into()];
    });
    // Within counts back from the newest set (1 Dec 02:00): 27 Nov 02:00
    // is exactly 4 days before and kept, a second earlier is not.
    assert_eq!(
        kept(&sets, &p, &utc),
        expect(&[
            ("20261101T020000Z", &["tag pre-upgrade"]),
            ("20261127T020000Z", &["within 4d"]),
            ("20261130T020000Z", &["last", "within 4d"]),
            ("20261201T020000Z", &["last", "within 4d"]),
        ])
    );
}

#[test]
fn incomplete_sets_never_fill_buckets_and_go_after_enough_complete_ones() {
    let sets = [
        set("2026-11-01T02:00:00Z"),
        with(set("2026-11-02T02:00:00Z"), Kind::Incomplete, None),
        set("2026-11-02T03:00:00Z"),
        with(
            set("2026-11-03T02:00:00Z"),
            Kind::Incomplete,
            Some("pre-upgrade"),
        ),
        set("2026-11-04T02:00:00Z"),
        with(set("2026-11-05T02:00:00Z"), Kind::Incomplete, None),
    ];
    let p = policy(|p| {
        p.keep_daily = 10;
        p.keep_last = 10;
        p.keep_tags = vec!["pre-upgrade".into()];
        p.keep_incomplete = 2;
    });
    assert_eq!(
        kept(&sets, &p, &utc),
        expect(&[
            ("20261101T020000Z", &["last", "daily"]),
            ("20261102T030000Z", &["last", "daily"]),
            // One newer complete set (4 Nov) of the two needed.
            (
                "20261103T020000Z",
                &["incomplete: 1 of 2 newer complete sets"]
            ),
            ("20261104T020000Z", &["last", "daily"]),
            (
                "20261105T020000Z",
                &["incomplete: 0 of 2 newer complete sets"]
            ),
        ])
    );
    // Three sets for ten days asked: "oldest daily" is not added to a set
    // already kept as daily. The 2 Nov incomplete set is gone: two newer
    // complete sets (2 Nov 03:00, 4 Nov) exist.
}

#[test]
fn the_newest_complete_set_is_never_removed_and_damaged_sets_stay() {
    let sets = [
        set("2026-11-01T02:00:00Z"),
        set("2026-11-02T02:00:00Z"),
        with(set("2026-11-03T02:00:00Z"), Kind::Damaged, None),
        with(set("2026-11-04T02:00:00Z"), Kind::Incomplete, None),
    ];
    // Only a tag rule that matches nothing.
    let p = policy(|p| p.keep_tags = vec!["pre-upgrade".into()]);
    assert!(p.has_rule());
    assert_eq!(
        kept(&sets, &p, &utc),
        expect(&[
            ("20261102T020000Z", &["newest complete"]),
            ("20261103T020000Z", &["damaged: only forget removes it"]),
            (
                "20261104T020000Z",
                &["incomplete: 0 of 3 newer complete sets"]
            ),
        ])
    );
}

#[test]
fn a_policy_without_rules_is_recognised() {
    assert!(!policy(|_| {}).has_rule());
    assert!(!policy(|p| p.keep_within = Some(Within::default())).has_rule());
    assert!(policy(|p| p.keep_yearly = 1).has_rule());
    assert!(Policy::recommended().has_rule());
    assert_eq!(
        Policy::recommended().describe(),
        ["daily 7", "weekly 4", "monthly 6", "tag pre-upgrade"]
    );
}

#[test]
fn durations_parse_like_restic() {
    let w = Within::parse("1y6m2w3d12h").unwrap();
    assert_eq!(
        w,
        Within {
            years: 1,
            months: 6,
            days: 17,
            hours: 12
        }
    );
    assert_eq!(w.to_string(), "1y6m17d12h");
    assert_eq!(Within::parse("14d").unwrap().to_string(), "14d");
    for bad in ["", "14", "d", "14x", "1.5d", "-1d", "99999999999d"] {
        let err = Within::parse(bad).unwrap_err();
        assert!(err.contains("is not a duration"), "{bad}: {err}");
    }
    // Months are calendar months: 1m before 31 March is 28 February.
    let cutoff = Within::parse("1m")
        .unwrap()
        .cutoff(at("2026-03-31T02:00:00Z"));
    assert_eq!(cutoff, Some(at("2026-02-28T02:00:00Z")));
}
