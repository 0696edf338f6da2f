use chrono::{TimeZone, Utc};

use super::{parse, parse_rate, starter, Problem, When};

const GOOD: &str = r#"
timezone = "Europe/Berlin"

[repositories.main]
location = "s3://backups/qdrant"

[sources.prod]
qdrant = ["http://qdrant-0:6333", "http://qdrant-1:6333"]
api_key_env = "QDRANT_API_KEY"

[sources.files]
paths = ["/var/lib/qdrant/snapshots"]

[schedules.daily]
source = "prod"
cron = "@daily"
tags = ["daily"]
[schedules.daily.retention]
days = 7

[schedules.weekly]
source = "prod"
repository = "main"
cron = "0 3 * * sun"
timezone = "UTC"
[schedules.weekly.retention]
keep_weekly = 8
min_count = 2

[prune]
cron = "@weekly"

[check]
cron = "30 4 * * *"
read_data_subset = "1/7"

[limits]
upload = "100MiB/s"

[[webhooks]]
url_env = "HOOK"
on = ["failure", "success"]
format = "slack"

[api]
listen = "127.0.0.1:9410"
"#;

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("problems")
}

/// "line N: key" of each problem.
fn places(ps: &[Problem]) -> Vec<String> {
    ps.iter()
        .map(|p| format!("{}: {}", p.line.unwrap_or(0), p.key))
        .collect()
}

#[test]
fn a_full_config_is_accepted_with_its_schedules_resolved() {
    let loaded = parse(GOOD).expect("valid");
    let c = &loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(c.schedules.len(), 2);
    assert_eq!(c.repository_of("daily").expect("repo").0, "main");
    // The daily schedule takes the file's zone: midnight in Berlin.
    let t = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
    assert_eq!(
        c.when("daily").expect("when").next_after(t),
        Some(Utc.with_ymd_and_hms(2026, 1, 10, 23, 0, 0).unwrap())
    );
    // Its own zone wins: Sunday 03:00 UTC.
    assert_eq!(
        c.when("weekly").expect("when").next_after(t),
        Some(Utc.with_ymd_and_hms(2026, 1, 11, 3, 0, 0).unwrap())
    );
    let weekly = c.schedules["weekly"]
        .retention
        .as_ref()
        .expect("retention")
        .get_ref()
        .policy();
    assert_eq!((weekly.weekly, weekly.last), (Some(8), Some(2)));
    let daily = c.schedules["daily"]
        .retention
        .as_ref()
        .expect("retention")
        .get_ref()
        .policy();
    assert_eq!(daily.within, Some(chrono::Duration::days(7)));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"[repositories.main]
location = "ftp://x/y"

[sources.prod]
qdrant = ["qdrant-0:6333"]
api_key = "secret-key-123"

[schedules.daily]
source = "prd"
repository = "other"
cron = "0 25 * * *"
timezone = "Mars/Olympus"
[schedules.daily.retention]
min_count = 0

[check]
cron = "@daily"
read_data_subset = "8/7"

[limits]
upload = "fast"

[[webhooks]]
url = "not a url"
url_env = "HOOK"
on = ["sometimes"]
format = "xml"

[api]
listen = "localhost"
"#;
    let ps = problems(text);
    assert_eq!(
        places(&ps),
        vec![
            "2: repositories.main.location",
            "5: sources.prod.qdrant",
            "6: sources.prod.api_key",
            "9: schedules.daily.source",
            "10: schedules.daily.repository",
            "11: schedules.daily.cron",
            "12: schedules.daily.timezone",
            "13: schedules.daily.retention.min_count",
            "18: check.read_data_subset",
            "21: limits.upload",
            "24: webhooks[0]",
            "24: webhooks[0].url",
            "26: webhooks[0].on",
            "27: webhooks[0].format",
            "30: api.listen",
        ],
        "{ps:#?}"
    );
    let text_of = |key: &str| {
        ps.iter()
            .find(|p| p.key == key)
            .map(ToString::to_string)
            .expect(key)
    };
    assert!(text_of("schedules.daily.source").contains("defined: prod"));
    assert!(text_of("sources.prod.api_key").contains("api_key_env"));
    // The secret itself is not repeated.
    assert!(ps.iter().all(|p| !p.to_string().contains("secret-key-123")));
    assert!(text_of("schedules.daily.cron").contains("\"0 25 * * *\""));
}

#[test]
fn syntax_and_unknown_keys_name_their_line() {
    let ps = problems("[repositories.main]\nlocation = \"/r\"\n\n[schedules.x]\nsource = \"s\"\ncron = \"@daily\"\nretain = 7\n");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, Some(7), "{ps:?}");
    assert!(ps[0].message.contains("retain"), "{ps:?}");
    let ps = problems("[repositories.main]\nlocation = \"/r\n");
    assert_eq!(ps[0].line, Some(2), "{ps:?}");
}

#[test]
fn missing_pieces_are_named() {
    let ps = problems("[sources.a]\napi_key_env = \"K\"\napi_key_file = \"/k\"\n");
    assert_eq!(
        places(&ps),
        vec!["1: repositories", "1: sources.a", "1: sources.a"],
        "{ps:#?}"
    );
    let ps = problems(
        "[repositories.a]\nlocation = \"/a\"\n[repositories.b]\nlocation = \"/b\"\n[sources.s]\npaths = [\"/p\"]\n[schedules.x]\nsource = \"s\"\ncron = \"@daily\"\n[schedules.x.retention]\n",
    );
    assert_eq!(
        places(&ps),
        vec!["7: schedules.x.repository", "10: schedules.x.retention"],
        "{ps:#?}"
    );
}

#[test]
fn warnings_do_not_stop_a_config() {
    let loaded = parse(
        "[repositories.a]\nlocation = \"/a\"\n[sources.s]\npaths = [\"/p\"]\n[schedules.x]\nsource = \"s\"\ncron = \"@hourly\"\n[api]\nlisten = \"0.0.0.0:9410\"\n",
    )
    .expect("valid");
    assert_eq!(
        places(&loaded.warnings),
        vec!["5: schedules.x.retention", "9: api.listen"]
    );
}

#[test]
fn the_starter_config_is_valid_and_quotes_what_it_is_given() {
    let text = starter(
        "s3://bucket/with \"quote\"",
        &["http://a:6333".into(), "http://b:6333".into()],
    );
    let loaded = parse(&text).expect("valid");
    let c = &loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        c.repositories["main"].location.get_ref(),
        "s3://bucket/with \"quote\""
    );
    assert_eq!(
        c.sources["qdrant"]
            .qdrant
            .as_ref()
            .expect("urls")
            .get_ref()
            .list(),
        vec!["http://a:6333", "http://b:6333"]
    );
    let r = c.schedules["daily"]
        .retention
        .as_ref()
        .expect("retention")
        .get_ref()
        .policy();
    assert_eq!(r.within, Some(chrono::Duration::days(7)));
}

#[test]
fn seconds_and_zones() {
    let w = When::parse("*/2 * * * * *", "UTC").expect("six fields");
    let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 1).unwrap();
    assert_eq!(
        w.next_after(t),
        Some(Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 2).unwrap())
    );
    // 02:30 on the night Berlin's clocks jump from 02:00 to 03:00 does not
    // exist: the next run is the following night's.
    let w = When::parse("30 2 * * *", "Europe/Berlin").expect("parse");
    let t = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
    let next = w.next_after(t).expect("next");
    assert!(
        next > Utc.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap(),
        "{next}"
    );
    assert!(When::parse("@daily", "Nowhere/Else").is_err());
    assert!(When::parse("61 * * * *", "UTC").is_err());
}

#[test]
fn rates() {
    assert_eq!(parse_rate("50MiB/s"), Ok(50 * 1024 * 1024));
    assert_eq!(parse_rate("1GB/s"), Ok(1_000_000_000));
    assert_eq!(parse_rate("200mbit"), Ok(25_000_000));
    assert_eq!(parse_rate(" 1.5 KiB/s "), Ok(1536));
    assert!(parse_rate("fast").is_err());
    assert!(parse_rate("0MiB/s").is_err());
    assert!(parse_rate("10 parsecs").is_err());
}

proptest::proptest! {
    /// Whatever the text, parsing returns (no panic), and every problem it
    /// places is on a line the text has.
    #[test]
    fn any_text_parses_or_names_lines_within_it(text in "[\\[\\]a-z_.= \"\n0-9@*/]{0,200}") {
        if let Err(ps) = parse(&text) {
            let lines = text.lines().count().max(1);
            for p in ps {
                if let Some(l) = p.line {
                    proptest::prop_assert!(l >= 1 && l <= lines + 1, "{p} in {text:?}");
                }
            }
        }
    }
}
