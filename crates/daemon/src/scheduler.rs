//! The daemon's clock: one task per schedule (and for prune and check) that
//! sleeps until the next fire time and runs the job, retries a failed run
//! with backoff while the next fire time is still ahead, and, at start,
//! runs a schedule once when fire times passed since its last recorded run
//! (saying so in the run's record).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_config::When;
use cairn_engine::{backup_job, RunState, Time, Trigger};
use chrono::Utc;
use tokio::sync::watch;

use crate::jobs::{Outcome, Runner, CHECK_JOB, DRILL_JOB, PRUNE_JOB};
use crate::lock;

/// Waits before the retries of a failed run: 30 s, 2 min, 8 min (each
/// only while it ends before the next fire time).
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(480),
];

/// What kind of job a task runs.
#[derive(Debug, Clone)]
enum Kind {
    Backup(String),
    Prune,
    Check,
    Drill,
}

impl Kind {
    /// The backup schedule it runs (`None`: prune or check, whose history is
    /// in the maintenance repository).
    fn schedule(&self) -> Option<&str> {
        match self {
            Self::Backup(n) => Some(n),
            Self::Prune | Self::Check | Self::Drill => None,
        }
    }

    fn job(&self) -> String {
        match self {
            Self::Backup(n) => backup_job(n),
            Self::Prune => PRUNE_JOB.to_string(),
            Self::Check => CHECK_JOB.to_string(),
            Self::Drill => DRILL_JOB.to_string(),
        }
    }
}

/// The next fire time of each job, as the scheduler sees it.
pub type NextRuns = Arc<std::sync::Mutex<BTreeMap<String, Option<Time>>>>;

/// Spawns a task per enabled schedule (and the prune and check schedules);
/// each stops when `stop` turns true (after the run in progress, if any).
#[must_use]
pub fn spawn(
    runner: &Arc<Runner>,
    stop: &watch::Receiver<bool>,
    next: &NextRuns,
) -> Vec<tokio::task::JoinHandle<()>> {
    let config = runner.config();
    let mut tasks = Vec::new();
    let default_zone = config
        .timezone
        .as_ref()
        .map_or_else(|| "UTC".to_string(), |t| t.get_ref().clone());
    let when_of = |cron: &str, tz: Option<&cairn_config::Spanned<String>>| {
        When::parse(
            cron,
            tz.map_or(default_zone.as_str(), |t| t.get_ref().as_str()),
        )
    };
    for (name, s) in &config.schedules {
        if !s.enabled {
            continue;
        }
        match when_of(s.cron.get_ref(), s.timezone.as_ref()) {
            Ok(w) => tasks.push(task(runner, stop, next, Kind::Backup(name.clone()), w)),
            Err(e) => tracing::error!(schedule = %name, error = %e, "schedule not started"),
        }
    }
    if let Some(p) = &config.prune {
        if let Ok(w) = when_of(p.cron.get_ref(), p.timezone.as_ref()) {
            tasks.push(task(runner, stop, next, Kind::Prune, w));
        }
    }
    if let Some(c) = &config.check {
        if let Ok(w) = when_of(c.cron.get_ref(), c.timezone.as_ref()) {
            tasks.push(task(runner, stop, next, Kind::Check, w));
        }
    }
    if let Some(d) = &config.drill {
        if let Ok(w) = when_of(d.cron.get_ref(), d.timezone.as_ref()) {
            tasks.push(task(runner, stop, next, Kind::Drill, w));
        }
    }
    tasks
}

async fn run_once(
    runner: &Runner,
    kind: &Kind,
    trigger: Trigger,
    at: Option<Time>,
    attempt: u32,
    note: Option<String>,
) -> Option<Outcome> {
    let r = match kind {
        Kind::Backup(n) => runner.run_schedule(n, trigger, at, attempt, note).await,
        Kind::Prune => runner.run_prune(trigger, at).await,
        Kind::Check => runner.run_check(trigger, at).await,
        Kind::Drill => runner.run_drill(trigger, at).await,
    };
    match r {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(job = %kind.job(), error = %crate::jobs::describe(&e), "could not run the job");
            None
        }
    }
}

/// Fire times of `when` after `after` up to `now`: how many, and the last.
fn missed(when: &When, after: Time, now: Time) -> (u64, Option<Time>) {
    let mut n = 0;
    let mut last = None;
    let mut t = after;
    while let Some(next) = when.next_after(t) {
        if next > now || n >= 100_000 {
            break;
        }
        n += 1;
        last = Some(next);
        t = next;
    }
    (n, last)
}

fn task(
    runner: &Arc<Runner>,
    stop: &watch::Receiver<bool>,
    next: &NextRuns,
    kind: Kind,
    when: When,
) -> tokio::task::JoinHandle<()> {
    let runner = Arc::clone(runner);
    let mut stop = stop.clone();
    let next = Arc::clone(next);
    crate::spawn_run(move || async move {
        let job = kind.job();
        // Catch up once on fire times missed while no daemon ran.
        match runner.last_scheduled(kind.schedule(), &job).await {
            Ok(Some(last)) => {
                let (n, latest) = missed(&when, last, Utc::now());
                if let (true, Some(at)) = (n > 0, latest) {
                    let note = format!(
                        "catch-up: {n} fire time(s) passed since {} with no daemon running; running once now",
                        last.to_rfc3339()
                    );
                    tracing::warn!(job = %job, missed = n, "{note}");
                    run_with_retries(
                        &runner,
                        &kind,
                        Trigger::CatchUp,
                        at,
                        Some(note),
                        &when,
                        &mut stop,
                    )
                    .await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %job, error = %crate::jobs::describe(&e), "could not read the job's history; no catch-up")
            }
        }
        loop {
            if *stop.borrow() {
                break;
            }
            let now = Utc::now();
            let Some(at) = when.next_after(now) else {
                break;
            };
            lock(&next).insert(job.clone(), Some(at));
            let wait = (at - now).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            run_with_retries(
                &runner,
                &kind,
                Trigger::Schedule,
                at,
                None,
                &when,
                &mut stop,
            )
            .await;
        }
        lock(&next).remove(&job);
    })
}

async fn run_with_retries(
    runner: &Runner,
    kind: &Kind,
    trigger: Trigger,
    at: Time,
    note: Option<String>,
    when: &When,
    stop: &mut watch::Receiver<bool>,
) {
    let Some(mut outcome) = run_once(runner, kind, trigger, Some(at), 1, note).await else {
        return;
    };
    for (i, delay) in RETRY_DELAYS.iter().enumerate() {
        let failed = matches!(&outcome, Outcome::Ran(r) if r.state == RunState::Failed);
        if !failed || *stop.borrow() {
            return;
        }
        let retry_at = Utc::now() + chrono::Duration::from_std(*delay).unwrap_or_default();
        if when.next_after(at).is_some_and(|n| retry_at >= n) {
            return; // the next fire time comes first
        }
        tracing::warn!(job = %kind.job(), retry_in_secs = delay.as_secs(), "run failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(*delay) => {}
            _ = stop.changed() => return,
        }
        #[allow(clippy::cast_possible_truncation)]
        let attempt = i as u32 + 2;
        match run_once(runner, kind, Trigger::Retry, Some(at), attempt, None).await {
            Some(o) => outcome = o,
            None => return,
        }
    }
}
