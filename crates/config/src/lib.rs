//! `cairn.toml`: the repositories, the sources, the named schedules with
//! their retention, the prune and check schedules, bandwidth limits,
//! webhooks and the API's address — what `cairn daemon` runs and what
//! `cairn backup --schedule NAME` takes.
//!
//! [`parse`] reads a file's text and checks everything it can without
//! touching the network: unknown keys, references between sections, cron
//! expressions, time zones, rates, URLs and addresses. Every problem names
//! its line, and all of them are reported at once, so one `cairn config
//! check` run shows everything to fix. Secrets never live in the file: the
//! Qdrant API key and the API token come from the environment or from a file
//! the config names, and a key written inline is refused.
//!
//! Schedules, retention and references are checked here; running them is
//! the daemon's (see docs/operations.md, "Configuration").

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cairn_engine::RetentionPolicy;
use chrono::{DateTime, Utc};
use serde::Deserialize;
pub use toml::Spanned;

/// The API's address when the config names none: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9410";

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line it is on, when it can be placed.
    pub line: Option<usize>,
    /// The key it concerns (`schedules.daily.cron`), or empty for a syntax
    /// error.
    pub key: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems (every one found).
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its problems, in line order.
        problems: Vec<Problem>,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Invalid { path, problems } => {
                write!(f, "{} has {} problem(s):", path.display(), problems.len())?;
                for p in problems {
                    write!(f, "\n  {}:{p}", path.display())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Invalid { .. } => None,
        }
    }
}

/// A whole `cairn.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The time zone of schedules that name none (default UTC).
    pub timezone: Option<Spanned<String>>,
    /// Repositories by name.
    #[serde(default)]
    pub repositories: BTreeMap<String, Repository>,
    /// What is backed up, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    /// Backup schedules by name.
    #[serde(default)]
    pub schedules: BTreeMap<String, Schedule>,
    /// When to prune.
    pub prune: Option<Job>,
    /// When to check (a rotating part of the data each time).
    pub check: Option<CheckJob>,
    /// When to drill (restore the latest cluster backup of each source
    /// into a scratch Qdrant and query it).
    pub drill: Option<DrillJob>,
    /// Bandwidth limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where to POST run notifications.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// The daemon's HTTP API and dashboard.
    #[serde(default)]
    pub api: Api,
}

/// A repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// A directory, `file://PATH`, `s3://BUCKET/PREFIX`,
    /// `gs://BUCKET/PREFIX` or `az://CONTAINER/PREFIX`.
    pub location: Spanned<String>,
    /// The local cache directory (the chunk index).
    pub cache_dir: Option<PathBuf>,
}

/// Qdrant URLs: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// One URL.
    One(String),
    /// Several (any node of a cluster will do; more are tried in turn).
    Many(Vec<String>),
}

impl Urls {
    /// The URLs as a list.
    #[must_use]
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::One(u) => vec![u.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// A source: a live Qdrant cluster or snapshot files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A live cluster: the URLs of its nodes.
    pub qdrant: Option<Spanned<Urls>>,
    /// The environment variable holding the cluster's API key.
    pub api_key_env: Option<String>,
    /// A file holding the cluster's API key.
    pub api_key_file: Option<PathBuf>,
    /// Refused: a key written in the config (named so the error can say
    /// where keys go instead).
    pub api_key: Option<Spanned<toml::Value>>,
    /// Snapshot files or directories to back up.
    pub paths: Option<Spanned<Vec<PathBuf>>>,
    /// A live cluster: read only the segment files that changed since the
    /// previous backup of each shard (`backup --delta`).
    #[serde(default)]
    pub delta: bool,
    /// With `delta`: read each shard in full again after this many nights
    /// (`backup --full-every`; 0 or absent: only when a chain breaks).
    #[serde(default)]
    pub full_every: u32,
}

/// A backup schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The source it backs up.
    pub source: Spanned<String>,
    /// The repository it writes (may be left out when there is one).
    pub repository: Option<Spanned<String>>,
    /// When: five fields (minute hour day month weekday), six with seconds
    /// first, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: Spanned<String>,
    /// An IANA time zone (`Europe/Berlin`); default the file's, else UTC.
    pub timezone: Option<Spanned<String>>,
    /// Tags put on every backup it makes.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What to keep of the backups it made.
    pub retention: Option<Spanned<Retention>>,
    /// A schedule can be kept in the file but paused.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What a schedule keeps of the backups it made (each rule keeps what it
/// names; a backup any rule keeps stays).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep every backup from the last N days.
    pub days: Option<u32>,
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// The newest of each of the last N hours.
    pub keep_hourly: Option<u32>,
    /// The newest of each of the last N days.
    pub keep_daily: Option<u32>,
    /// The newest of each of the last N ISO weeks.
    pub keep_weekly: Option<u32>,
    /// The newest of each of the last N months.
    pub keep_monthly: Option<u32>,
    /// The newest of each of the last N years.
    pub keep_yearly: Option<u32>,
    /// Whatever else the rules say, never fewer than the newest N.
    pub min_count: Option<u32>,
    /// Keep every backup with one of these tags.
    #[serde(default)]
    pub keep_tags: Vec<String>,
}

impl Retention {
    /// The engine's policy for these rules.
    #[must_use]
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            last: match (self.keep_last, self.min_count) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.days.map(|d| chrono::Duration::days(i64::from(d))),
            tags: self.keep_tags.clone(),
        }
    }
}

/// A maintenance schedule (prune).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The repository (may be left out when there is one; otherwise every
    /// repository, one after the other).
    pub repository: Option<Spanned<String>>,
    /// When (as for schedules).
    pub cron: Spanned<String>,
    /// Time zone (as for schedules).
    pub timezone: Option<Spanned<String>>,
}

/// The check schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckJob {
    /// The repository (as for prune).
    pub repository: Option<Spanned<String>>,
    /// When (as for schedules).
    pub cron: Spanned<String>,
    /// Time zone (as for schedules).
    pub timezone: Option<Spanned<String>>,
    /// The part of the packs each run reads and verifies, as `cairn check
    /// --read-data-subset` takes it: `1/7` (the daemon moves to the next
    /// seventh each run: the whole repository in a week of daily runs) or
    /// a share (`5%`). Without it, structure only.
    pub read_data_subset: Option<Spanned<String>>,
}

/// The restore drill schedule: each run drills the latest cluster backup
/// of every source in the repository, as `cairn drill` does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillJob {
    /// The repository (as for prune).
    pub repository: Option<Spanned<String>>,
    /// When (as for schedules).
    pub cron: Spanned<String>,
    /// Time zone (as for schedules).
    pub timezone: Option<Spanned<String>>,
    /// The Qdrant server binary to restore into (`cairn drill --qdrant-bin`).
    pub qdrant_bin: Spanned<String>,
    /// Where the scratch node keeps its storage (`--work-dir`).
    pub work_dir: Option<Spanned<String>>,
}

/// Bandwidth limits, in bytes (`50MiB/s`, `1GB/s`) or bits (`200mbit`) a
/// second.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Uploads to the repository.
    pub upload: Option<Spanned<String>>,
    /// Downloads from the repository.
    pub download: Option<Spanned<String>>,
}

/// A webhook target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The URL (a Slack-style URL is a secret: prefer `url_env` or
    /// `url_file`).
    pub url: Option<Spanned<String>>,
    /// The environment variable holding the URL.
    pub url_env: Option<String>,
    /// A file holding the URL.
    pub url_file: Option<PathBuf>,
    /// Which runs: `failure` (the default) and/or `success`.
    #[serde(default)]
    pub on: Vec<Spanned<String>>,
    /// Body: `json` (the default: the run record), `slack` (`{"text": …}`)
    /// or `alertmanager` (a list of alerts).
    pub format: Option<Spanned<String>>,
}

/// The daemon's HTTP API and dashboard.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Address to listen on (default [`DEFAULT_LISTEN`]).
    pub listen: Option<Spanned<String>>,
    /// A file holding the bearer token (else `CAIRN_API_TOKEN`).
    pub token_file: Option<PathBuf>,
}

/// When a schedule fires: a cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct When {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl When {
    /// Parses a pattern and a time zone name.
    ///
    /// # Errors
    /// A message naming what is wrong with either.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, String> {
        Ok(Self {
            cron: parse_cron(pattern)?,
            tz: parse_zone(timezone)?,
        })
    }

    /// The first time it fires strictly after `t`.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|n| n.with_timezone(&Utc))
    }

    /// The time zone.
    #[must_use]
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }
}

/// A cron pattern, or a message naming the accepted forms.
fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(pattern).map_err(|e| {
        format!(
            "invalid cron expression {pattern:?}: {e} (five fields: minute hour day month weekday; six with seconds first; or @hourly, @daily, @weekly, @monthly, @yearly)"
        )
    })
}

/// An IANA time zone, or a message saying what one looks like.
fn parse_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (an IANA name such as UTC or Europe/Berlin)")
    })
}

/// A config with what was found worth a warning (nothing that stops it
/// from running).
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Warnings, in line order.
    pub warnings: Vec<Problem>,
}

/// Reads and checks a config file.
///
/// # Errors
/// [`LoadError::Io`] when it cannot be read, [`LoadError::Invalid`] with
/// every problem found.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| LoadError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses and checks a config's text.
///
/// # Errors
/// Every problem found, in line order.
pub fn parse(text: &str) -> Result<Loaded, Vec<Problem>> {
    let config: Config = toml::from_str(text).map_err(|e| {
        vec![Problem {
            line: e.span().map(|s| line_of(text, s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        }]
    })?;
    let mut c = Checker {
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    c.check(&config);
    let Checker {
        mut problems,
        mut warnings,
        ..
    } = c;
    if problems.is_empty() {
        warnings.sort_by_key(|p| p.line);
        Ok(Loaded { config, warnings })
    } else {
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> Option<usize> {
        Some(line_of(self.text, s.span().start))
    }

    fn problem(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The line of a table's header (`[schedules.NAME]`), for problems
    /// with the table as a whole.
    fn header(&self, path: &str) -> Option<usize> {
        let want = format!("[{path}]");
        self.text
            .lines()
            .position(|l| l.trim().replace(' ', "") == want)
            .map(|i| i + 1)
    }

    fn check(&mut self, c: &Config) {
        self.check_zone("timezone", c.timezone.as_ref());
        if c.repositories.is_empty() {
            self.problem(
                Some(1),
                "repositories",
                "no repository: add [repositories.NAME] with location = \"s3://BUCKET/PREFIX\" (or a directory)",
            );
        }
        for (name, r) in &c.repositories {
            self.check_location(&format!("repositories.{name}.location"), &r.location);
        }
        for (name, s) in &c.sources {
            self.check_source(name, s);
        }
        for (name, s) in &c.schedules {
            let key = format!("schedules.{name}");
            if !cairn_engine::valid_job_name(name) {
                let line = self.header(&key);
                self.problem(
                    line,
                    key.clone(),
                    "a schedule's name must be 1 to 64 letters, digits, - and _ (it names the schedule's run records and tag)",
                );
            }
            if !c.sources.contains_key(s.source.get_ref()) {
                let line = self.at(&s.source);
                self.problem(
                    line,
                    format!("{key}.source"),
                    format!(
                        "no source named {:?} ({})",
                        s.source.get_ref(),
                        defined(c.sources.keys())
                    ),
                );
            }
            self.check_repository_ref(&key, s.repository.as_ref(), c);
            let tz = s.timezone.as_ref();
            self.check_when(&key, &s.cron, tz);
            match &s.retention {
                None => {
                    let line = self.header(&key);
                    self.warn(
                        line,
                        format!("{key}.retention"),
                        "no retention: every backup this schedule makes is kept until forgotten by hand (add [".to_string()
                            + &key
                            + ".retention] with days = N)",
                    );
                }
                Some(r) if r.get_ref().policy().is_empty() => {
                    let line = self.at(r);
                    self.problem(
                        line,
                        format!("{key}.retention"),
                        "no rule: set days, keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly or min_count",
                    );
                }
                Some(r) if r.get_ref().min_count == Some(0) => {
                    let line = self.at(r);
                    self.problem(
                        line,
                        format!("{key}.retention.min_count"),
                        "must be at least 1 (a schedule's newest backup is always kept)",
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(p) = &c.prune {
            self.check_repository_ref("prune", p.repository.as_ref(), c);
            self.check_when("prune", &p.cron, p.timezone.as_ref());
        }
        if let Some(k) = &c.check {
            self.check_repository_ref("check", k.repository.as_ref(), c);
            self.check_when("check", &k.cron, k.timezone.as_ref());
            if let Some(s) = &k.read_data_subset {
                if let Err(e) = cairn_engine::ReadData::parse_subset(s.get_ref()) {
                    let line = self.at(s);
                    self.problem(line, "check.read_data_subset", e);
                }
            }
        }
        if let Some(d) = &c.drill {
            self.check_repository_ref("drill", d.repository.as_ref(), c);
            self.check_when("drill", &d.cron, d.timezone.as_ref());
            if !std::path::Path::new(d.qdrant_bin.get_ref()).is_file() {
                let line = self.at(&d.qdrant_bin);
                self.problem(
                    line,
                    "drill.qdrant_bin",
                    format!("no Qdrant binary at {}", d.qdrant_bin.get_ref()),
                );
            }
        }
        for (key, rate) in [
            ("limits.upload", &c.limits.upload),
            ("limits.download", &c.limits.download),
        ] {
            if let Some(r) = rate {
                if let Err(e) = parse_rate(r.get_ref()) {
                    let line = self.at(r);
                    self.problem(line, key, e);
                }
            }
        }
        for (i, w) in c.webhooks.iter().enumerate() {
            self.check_webhook(i, w);
        }
        self.check_api(&c.api);
    }

    fn check_location(&mut self, key: &str, loc: &Spanned<String>) {
        let l = loc.get_ref();
        let line = self.at(loc);
        if l.trim().is_empty() {
            self.problem(line, key, "empty: a directory, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX");
            return;
        }
        if let Some((scheme, rest)) = l.split_once("://") {
            if !matches!(scheme, "file" | "s3" | "gs" | "az") {
                self.problem(
                    line,
                    key,
                    format!("unknown scheme {scheme:?} in {l:?} (file, s3, gs or az; or a plain directory)"),
                );
            } else if scheme != "file" && rest.split('/').next().is_none_or(str::is_empty) {
                self.problem(line, key, format!("{l:?} names no bucket or container"));
            }
        }
    }

    fn check_source(&mut self, name: &str, s: &Source) {
        let key = format!("sources.{name}");
        if let Some(k) = &s.api_key {
            let line = self.at(k);
            self.problem(
                line,
                format!("{key}.api_key"),
                "API keys do not go in the config: name an environment variable (api_key_env = \"QDRANT_API_KEY\") or a file (api_key_file = \"/etc/cairn/qdrant-key\")",
            );
        }
        if s.api_key_env.is_some() && s.api_key_file.is_some() {
            let line = self.header(&key);
            self.problem(
                line,
                key.clone(),
                "api_key_env and api_key_file are both set: keep one",
            );
        }
        match (&s.qdrant, &s.paths) {
            (Some(_), Some(p)) => {
                let line = self.at(p);
                self.problem(
                    line,
                    key.clone(),
                    "both qdrant and paths: a source is a cluster or snapshot files; make two sources",
                );
            }
            (None, None) => {
                let line = self.header(&key);
                self.problem(
                    line,
                    key.clone(),
                    "nothing to back up: set qdrant = [\"http://node:6333\", …] or paths = [\"/snapshots\"]",
                );
            }
            (Some(q), None) => {
                let urls = q.get_ref().list();
                let line = self.at(q);
                if urls.is_empty() {
                    self.problem(line, format!("{key}.qdrant"), "no URL");
                }
                for u in urls {
                    match url::Url::parse(&u) {
                        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
                        _ => self.problem(
                            line,
                            format!("{key}.qdrant"),
                            format!("{u:?} is not an http(s) URL (e.g. http://qdrant-0:6333)"),
                        ),
                    }
                }
            }
            (None, Some(p)) => {
                let line = self.at(p);
                if p.get_ref().is_empty() {
                    self.problem(line, format!("{key}.paths"), "no path");
                }
                if s.delta || s.full_every > 0 {
                    self.problem(
                        line,
                        format!("{key}.delta"),
                        "delta and full_every apply to a live cluster (qdrant = [...]), not to snapshot files",
                    );
                }
            }
        }
    }

    fn check_repository_ref(&mut self, key: &str, r: Option<&Spanned<String>>, c: &Config) {
        match r {
            Some(r) if !c.repositories.contains_key(r.get_ref()) => {
                let line = self.at(r);
                self.problem(
                    line,
                    format!("{key}.repository"),
                    format!(
                        "no repository named {:?} ({})",
                        r.get_ref(),
                        defined(c.repositories.keys())
                    ),
                );
            }
            None if key.starts_with("schedules.") && c.repositories.len() > 1 => {
                let line = self.header(key);
                self.problem(
                    line,
                    format!("{key}.repository"),
                    format!(
                        "several repositories are defined: name one ({})",
                        defined(c.repositories.keys())
                    ),
                );
            }
            _ => {}
        }
    }

    fn check_when(&mut self, key: &str, cron: &Spanned<String>, tz: Option<&Spanned<String>>) {
        if let Err(e) = parse_cron(cron.get_ref()) {
            let line = self.at(cron);
            self.problem(line, format!("{key}.cron"), e);
        }
        self.check_zone(&format!("{key}.timezone"), tz);
    }

    fn check_zone(&mut self, key: &str, tz: Option<&Spanned<String>>) {
        if let Some(t) = tz {
            if let Err(e) = parse_zone(t.get_ref()) {
                let line = self.at(t);
                self.problem(line, key, e);
            }
        }
    }

    fn check_webhook(&mut self, i: usize, w: &Webhook) {
        let key = format!("webhooks[{i}]");
        let set = usize::from(w.url.is_some())
            + usize::from(w.url_env.is_some())
            + usize::from(w.url_file.is_some());
        let line = w
            .url
            .as_ref()
            .and_then(|u| self.at(u))
            .or_else(|| self.nth_array_table("webhooks", i));
        if set != 1 {
            self.problem(
                line,
                key.clone(),
                "set exactly one of url, url_env, url_file",
            );
        }
        if let Some(u) = &w.url {
            match url::Url::parse(u.get_ref()) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {
                    self.warn(
                        line,
                        format!("{key}.url"),
                        "a webhook URL often carries a secret: prefer url_env or url_file",
                    );
                }
                _ => self.problem(
                    line,
                    format!("{key}.url"),
                    format!("{:?} is not an http(s) URL", u.get_ref()),
                ),
            }
        }
        for on in &w.on {
            if !matches!(on.get_ref().as_str(), "failure" | "success") {
                let line = self.at(on);
                self.problem(
                    line,
                    format!("{key}.on"),
                    format!("unknown event {:?} (failure or success)", on.get_ref()),
                );
            }
        }
        if let Some(f) = &w.format {
            if !matches!(f.get_ref().as_str(), "json" | "slack" | "alertmanager") {
                let line = self.at(f);
                self.problem(
                    line,
                    format!("{key}.format"),
                    format!(
                        "unknown format {:?} (json, slack or alertmanager)",
                        f.get_ref()
                    ),
                );
            }
        }
    }

    /// The line of the `i`-th `[[name]]` header.
    fn nth_array_table(&self, name: &str, i: usize) -> Option<usize> {
        let want = format!("[[{name}]]");
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim().replace(' ', "") == want)
            .nth(i)
            .map(|(n, _)| n + 1)
    }

    fn check_api(&mut self, api: &Api) {
        let Some(listen) = &api.listen else {
            return;
        };
        let line = self.at(listen);
        match listen.get_ref().parse::<SocketAddr>() {
            Err(_) => self.problem(
                line,
                "api.listen",
                format!("{:?} is not an address and port (e.g. 127.0.0.1:9410)", listen.get_ref()),
            ),
            Ok(a) if !a.ip().is_loopback() && api.token_file.is_none() => self.warn(
                line,
                "api.listen",
                format!("{a} is reachable from other hosts: the daemon refuses to listen there without a token (api.token_file, or CAIRN_API_TOKEN in its environment)"),
            ),
            Ok(_) => {}
        }
    }
}

/// "defined: a, b" or "none is defined".
fn defined<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none is defined".into()
    } else {
        format!("defined: {}", names.join(", "))
    }
}

/// A rate: bytes (`50MiB/s`, `1GB/s`, `500KiB/s`) or bits (`200mbit`,
/// `1gbit`) a second, as bytes a second.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid rate {s:?} (e.g. 50MiB/s, 1GB/s or 200mbit)");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim() {
        "B/s" => 1.0,
        "KB/s" | "kB/s" => 1e3,
        "MB/s" => 1e6,
        "GB/s" => 1e9,
        "KiB/s" => 1024.0,
        "MiB/s" => 1024.0 * 1024.0,
        "GiB/s" => 1024.0 * 1024.0 * 1024.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        _ => return Err(bad()),
    };
    let bytes = n * factor;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("rate {s:?} is below one byte a second"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

impl Config {
    /// When schedule `name` fires (the config must have been checked).
    #[must_use]
    pub fn when(&self, name: &str) -> Option<When> {
        let s = self.schedules.get(name)?;
        When::parse(s.cron.get_ref(), self.zone_of(s.timezone.as_ref())).ok()
    }

    fn zone_of<'a>(&'a self, tz: Option<&'a Spanned<String>>) -> &'a str {
        tz.or(self.timezone.as_ref())
            .map_or("UTC", |t| t.get_ref().as_str())
    }

    /// The repository a schedule writes: the one it names, or the only one.
    #[must_use]
    pub fn repository_of(&self, schedule: &str) -> Option<(&str, &Repository)> {
        let s = self.schedules.get(schedule)?;
        match &s.repository {
            Some(r) => self
                .repositories
                .get_key_value(r.get_ref())
                .map(|(k, v)| (k.as_str(), v)),
            None if self.repositories.len() == 1 => self
                .repositories
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v)),
            None => None,
        }
    }
}

/// A commented starter config: one repository, one Qdrant source and a
/// schedule named `daily` keeping 7 days of backups.
#[must_use]
pub fn starter(repo: &str, qdrant: &[String]) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let urls: Vec<String> = qdrant.iter().map(|u| quote(u)).collect();
    format!(
        r#"# cairn.toml: what `cairn daemon --config FILE` runs, and what
# `cairn backup --schedule NAME` takes. Check it with `cairn config check FILE`.
# Reference: docs/operations.md, "Configuration".

# Time zone of the schedules below (an IANA name); each schedule may set its own.
timezone = "UTC"

# Where backups go: a directory, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or
# az://CONTAINER/PREFIX (credentials from the usual AWS_*, GOOGLE_*, AZURE_*
# environment variables).
[repositories.main]
location = {repo}
# cache_dir = "/var/cache/cairn"   # the local chunk index; default: the user's cache dir

# A live Qdrant cluster: every collection, one healthy replica per shard.
[sources.qdrant]
qdrant = [{urls}]
# The API key is never written here: name a variable or a file.
# api_key_env = "QDRANT_API_KEY"
# api_key_file = "/etc/cairn/qdrant-api-key"
# Read only the segment files that changed since the last backup (Qdrant
# 1.15+); each shard is read in full again every full_every nights.
# delta = true
# full_every = 7

# Snapshot files instead of a live cluster:
# [sources.files]
# paths = ["/var/lib/qdrant/snapshots"]

# A backup schedule. cron: five fields (minute hour day month weekday), six
# with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
# Several schedules may back up one source, each with its own retention.
[schedules.daily]
source = "qdrant"
repository = "main"
cron = "@daily"
tags = ["daily"]

# What this schedule keeps of the backups it made: every backup of the last
# 7 days. Also: keep_last, keep_hourly, keep_daily, keep_weekly,
# keep_monthly, keep_yearly, min_count (never fewer than the newest N).
[schedules.daily.retention]
days = 7

# A weekly schedule with longer retention:
# [schedules.weekly]
# source = "qdrant"
# cron = "0 3 * * sun"
# [schedules.weekly.retention]
# keep_weekly = 8
# min_count = 2

# Prune (delete data no backup needs; safe while backups run):
# [prune]
# cron = "@weekly"

# Check the repository, reading a different seventh of the data each run:
# [check]
# cron = "@daily"
# read_data_subset = "1/7"

# Prove the latest cluster backup of each source restores and answers
# (restored into a scratch Qdrant started from this binary, then queried):
# [drill]
# cron = "@weekly"
# qdrant_bin = "/usr/local/bin/qdrant"

# Bandwidth limits (50MiB/s, 1GB/s, 200mbit):
# [limits]
# upload = "100MiB/s"
# download = "200MiB/s"

# Notifications (failure by default; format json, slack or alertmanager):
# [[webhooks]]
# url_env = "CAIRN_WEBHOOK_URL"
# on = ["failure"]
# format = "slack"

# The daemon's API and dashboard (loopback unless a token is set):
# [api]
# listen = "{listen}"
# token_file = "/etc/cairn/api-token"   # or CAIRN_API_TOKEN
"#,
        repo = quote(repo),
        urls = urls.join(", "),
        listen = DEFAULT_LISTEN,
    )
}

#[cfg(test)]
mod tests;
