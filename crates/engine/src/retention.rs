//! Retention policies: which snapshots of a group a policy keeps, and why.
//!
//! Rules (each optional; a snapshot kept by any rule is kept):
//! - `last N`: the N newest snapshots;
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of
//!   the N newest hours, days, ISO weeks, months, years that have one (UTC);
//!   within a period a complete backup is preferred to a newer partial one;
//! - `within D`: every snapshot taken at most D before the group's newest
//!   one (not before now: a group whose backups stopped keeps its last
//!   period instead of losing everything);
//! - `tag T`: every snapshot tagged T.
//!
//! A policy with no rule keeps everything.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A retention policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Newest N.
    pub last: Option<u32>,
    /// Newest of each of the last N hours.
    pub hourly: Option<u32>,
    /// Newest of each of the last N days.
    pub daily: Option<u32>,
    /// Newest of each of the last N ISO weeks.
    pub weekly: Option<u32>,
    /// Newest of each of the last N months.
    pub monthly: Option<u32>,
    /// Newest of each of the last N years.
    pub yearly: Option<u32>,
    /// Everything within this long of the newest snapshot.
    pub within: Option<Duration>,
    /// Everything with one of these tags.
    pub tags: Vec<String>,
}

impl RetentionPolicy {
    /// True when no rule is set (everything is kept).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What the policy needs to know of a snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its tags.
    pub tags: Vec<String>,
    /// False for partial cluster backups.
    pub complete: bool,
}

impl From<&crate::repository::SnapshotInfo> for Candidate {
    fn from(i: &crate::repository::SnapshotInfo) -> Self {
        Self {
            time: i.snapshot.time,
            tags: i.snapshot.tags.clone(),
            complete: i.snapshot.qdrant.as_ref().is_none_or(|r| !r.partial),
        }
    }
}

/// Why a snapshot is kept: one entry per rule that keeps it.
pub type Reasons = Vec<String>;

/// Applies `policy` to one group; returns, per candidate (same order), the
/// rules that keep it (empty: removed).
#[must_use]
pub fn apply(policy: &RetentionPolicy, candidates: &[Candidate]) -> Vec<Reasons> {
    let mut reasons: Vec<Reasons> = vec![Vec::new(); candidates.len()];
    if policy.is_empty() {
        for r in &mut reasons {
            r.push("no policy".into());
        }
        return reasons;
    }
    // Newest first; ties broken by position for determinism.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].time.cmp(&candidates[a].time).then(b.cmp(&a)));

    if let Some(n) = policy.last {
        for &i in order.iter().take(n as usize) {
            reasons[i].push("last".into());
        }
    }
    type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);
    let buckets: [(&str, Option<u32>, Bucket); 5] = [
        ("hourly", policy.hourly, |t| {
            (t.year(), t.ordinal(), t.hour(), 0)
        }),
        ("daily", policy.daily, |t| (t.year(), t.ordinal(), 0, 0)),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", policy.monthly, |t| (t.year(), t.month(), 0, 0)),
        ("yearly", policy.yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (name, count, bucket) in buckets {
        let Some(n) = count else { continue };
        let mut seen = BTreeSet::new();
        // Periods newest first; in each, the newest complete snapshot, else the newest.
        let mut kept = 0;
        for &i in &order {
            let key = bucket(&candidates[i].time);
            if seen.contains(&key) {
                continue;
            }
            if kept >= n {
                break;
            }
            seen.insert(key);
            let pick = order
                .iter()
                .copied()
                .filter(|&j| bucket(&candidates[j].time) == key)
                .find(|&j| candidates[j].complete)
                .unwrap_or(i);
            reasons[pick].push(format!(
                "{name} {}",
                period_name(name, &candidates[pick].time)
            ));
            kept += 1;
        }
    }
    if let (Some(d), Some(&newest)) = (policy.within, order.first()) {
        let since = candidates[newest].time - d;
        for &i in &order {
            if candidates[i].time >= since {
                reasons[i].push(format!("within {}", format_duration(d)));
            }
        }
    }
    for (i, c) in candidates.iter().enumerate() {
        for t in &policy.tags {
            if c.tags.contains(t) {
                reasons[i].push(format!("tag {t}"));
            }
        }
    }
    reasons
}

fn period_name(rule: &str, t: &DateTime<Utc>) -> String {
    match rule {
        "hourly" => t.format("%Y-%m-%d %H:00").to_string(),
        "daily" => t.format("%Y-%m-%d").to_string(),
        "weekly" => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        "monthly" => t.format("%Y-%m").to_string(),
        _ => t.format("%Y").to_string(),
    }
}

/// Parses `7d`, `12h`, `2w`, `6m`, `1y`, or combinations such as `1y6m`:
/// y = 365 days, m = 30 days, w = 7 days, d = 24 hours.
///
/// # Errors
/// A message naming what is not understood.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::zero();
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: a number must come before {c:?}"))?;
        num.clear();
        let unit = match c {
            'y' => Duration::days(365),
            'm' => Duration::days(30),
            'w' => Duration::days(7),
            'd' => Duration::days(1),
            'h' => Duration::hours(1),
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use y, m, w, d, h)"
                ))
            }
        };
        total += unit * i32::try_from(n).map_err(|_| format!("duration {s:?} is too long"))?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!(
            "invalid duration {s:?}: expected e.g. 7d, 12h, 4w, 6m, 1y"
        ));
    }
    Ok(total)
}

fn format_duration(d: Duration) -> String {
    if d.num_hours() % 24 == 0 {
        format!("{}d", d.num_days())
    } else {
        format!("{}h", d.num_hours())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid")
    }

    fn c(t: DateTime<Utc>) -> Candidate {
        Candidate {
            time: t,
            tags: Vec::new(),
            complete: true,
        }
    }

    /// Times of the kept candidates, newest first, as `YYYY-MM-DDTHH`.
    fn kept(policy: &RetentionPolicy, cs: &[Candidate]) -> Vec<String> {
        let r = apply(policy, cs);
        let mut out: Vec<(DateTime<Utc>, String)> = cs
            .iter()
            .zip(&r)
            .filter(|(_, r)| !r.is_empty())
            .map(|(c, _)| (c.time, c.time.format("%Y-%m-%dT%H").to_string()))
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.0));
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// One backup a day at 02:00 from 2025-11-20 to 2027-01-10: across a
    /// year end, month ends, a leap-free February and ISO weeks that
    /// straddle years.
    fn daily_series() -> Vec<Candidate> {
        let mut out = Vec::new();
        let mut t = at(2025, 11, 20, 2);
        while t <= at(2027, 1, 10, 2) {
            out.push(c(t));
            t += Duration::days(1);
        }
        out
    }

    #[test]
    fn qdrant_cloud_like_policy_golden() {
        // Daily kept 7 days, weekly 4 weeks, monthly a year.
        let p = RetentionPolicy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&p, &daily_series()),
            [
                // daily: the last 7 days
                "2027-01-10T02",
                "2027-01-09T02",
                "2027-01-08T02",
                "2027-01-07T02",
                "2027-01-06T02",
                "2027-01-05T02",
                "2027-01-04T02",
                // weekly, ISO weeks: 2027-W01 (Jan 4-10) is Jan 10, already kept;
                // 2026 has 53 weeks: W53 ends Sunday 2027-01-03
                "2027-01-03T02",
                // monthly: January 2027 is Jan 10; December 2026
                "2026-12-31T02",
                // weekly: W52 and W51
                "2026-12-27T02",
                "2026-12-20T02",
                // monthly: the last day of each month back to February 2026
                // (12 months with January 2027)
                "2026-11-30T02",
                "2026-10-31T02",
                "2026-09-30T02",
                "2026-08-31T02",
                "2026-07-31T02",
                "2026-06-30T02",
                "2026-05-31T02",
                "2026-04-30T02",
                "2026-03-31T02",
                "2026-02-28T02",
            ]
        );
    }

    #[test]
    fn yearly_and_last_golden() {
        let p = RetentionPolicy {
            last: Some(2),
            yearly: Some(3),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&p, &daily_series()),
            [
                "2027-01-10T02",
                "2027-01-09T02",
                "2026-12-31T02",
                "2025-12-31T02"
            ]
        );
    }

    #[test]
    fn hourly_within_and_tags() {
        let mut cs: Vec<Candidate> = (0..30)
            .map(|h| c(at(2026, 3, 1, 0) + Duration::hours(h)))
            .collect();
        cs[0].tags.push("keep".into());
        let p = RetentionPolicy {
            hourly: Some(3),
            within: Some(Duration::hours(5)),
            tags: vec!["keep".into()],
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&p, &cs),
            [
                "2026-03-02T05",
                "2026-03-02T04",
                "2026-03-02T03",
                "2026-03-02T02",
                "2026-03-02T01",
                "2026-03-02T00",
                "2026-03-01T00",
            ]
        );
        let reasons = apply(&p, &cs);
        assert_eq!(reasons[29], vec!["hourly 2026-03-02 05:00", "within 5h"]);
        assert_eq!(reasons[0], vec!["tag keep"]);
    }

    #[test]
    fn a_complete_backup_is_preferred_within_its_period() {
        let mut cs = vec![c(at(2026, 5, 1, 2)), c(at(2026, 5, 1, 14))];
        cs[1].complete = false; // the newer one of the day is partial
        let p = RetentionPolicy {
            daily: Some(1),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept(&p, &cs), ["2026-05-01T02"]);
    }

    #[test]
    fn no_policy_keeps_everything() {
        let cs = daily_series();
        assert!(apply(&RetentionPolicy::default(), &cs)
            .iter()
            .all(|r| !r.is_empty()));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("7d").expect("ok"), Duration::days(7));
        assert_eq!(parse_duration("1y6m").expect("ok"), Duration::days(545));
        assert_eq!(parse_duration("36h").expect("ok"), Duration::hours(36));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3x")
            .expect_err("unit")
            .contains("unknown unit"));
    }
}
