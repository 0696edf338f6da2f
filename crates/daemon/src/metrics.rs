//! `/metrics` in the Prometheus text format (version 0.0.4), computed from
//! the run records in the repositories at each scrape, so every daemon
//! reports the same history.

use std::fmt::Write;

use anyhow::Result;
use cairn_engine::{backup_job, RunState, Time};

use crate::jobs::{CHECK_JOB, PRUNE_JOB};
use crate::Shared;

/// Run records read per job at each scrape.
const RUNS_READ: usize = 200;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text.
///
/// # Errors
/// A repository that cannot be read.
pub async fn render(s: &Shared) -> Result<String> {
    let runner = s.runner();
    let config = runner.config();
    let mut out = String::new();
    let mut families: Vec<(&str, &str, &str, Vec<String>)> = vec![
        (
            "cairn_schedule_last_success_timestamp_seconds",
            "gauge",
            "When the schedule's last successful run finished (Unix time).",
            vec![],
        ),
        (
            "cairn_schedule_last_run_timestamp_seconds",
            "gauge",
            "When the schedule's last run finished, whatever its state (Unix time).",
            vec![],
        ),
        (
            "cairn_schedule_last_duration_seconds",
            "gauge",
            "How long the schedule's last finished run took.",
            vec![],
        ),
        (
            "cairn_schedule_last_bytes_read",
            "gauge",
            "Bytes the last successful run read from its source.",
            vec![],
        ),
        (
            "cairn_schedule_last_bytes_added",
            "gauge",
            "Bytes of new chunk data the last successful run added.",
            vec![],
        ),
        (
            "cairn_schedule_last_bytes_uploaded",
            "gauge",
            "Bytes the last successful run uploaded.",
            vec![],
        ),
        (
            "cairn_schedule_last_run_failed",
            "gauge",
            "1 when the schedule's last finished run failed.",
            vec![],
        ),
        (
            "cairn_schedule_running",
            "gauge",
            "1 while a run of the schedule is in progress (on any host).",
            vec![],
        ),
        (
            "cairn_schedule_runs",
            "gauge",
            "Runs of the schedule by state, among its newest 200 records.",
            vec![],
        ),
        (
            "cairn_repository_snapshots",
            "gauge",
            "Backups in the repository.",
            vec![],
        ),
        (
            "cairn_repository_stored_bytes",
            "gauge",
            "Bytes the repository's backups take in storage (as of the newest backup).",
            vec![],
        ),
        (
            "cairn_prune_last_freed_bytes",
            "gauge",
            "Bytes the last prune deleted.",
            vec![],
        ),
        (
            "cairn_prune_last_success_timestamp_seconds",
            "gauge",
            "When the last successful prune finished.",
            vec![],
        ),
        (
            "cairn_check_last_errors",
            "gauge",
            "Problems the last check found.",
            vec![],
        ),
        (
            "cairn_check_last_success_timestamp_seconds",
            "gauge",
            "When the last clean check finished.",
            vec![],
        ),
        (
            "cairn_drill_last_success_timestamp_seconds",
            "gauge",
            "When the last restore drill of a backup of the source passed (Unix time).",
            vec![],
        ),
        (
            "cairn_drill_last_passed",
            "gauge",
            "1 when the newest restore drill of a backup of the source passed.",
            vec![],
        ),
    ];
    let mut push = |name: &str, line: String| {
        if let Some(f) = families.iter_mut().find(|f| f.0 == name) {
            f.3.push(line);
        }
    };
    for (name, sc) in &config.schedules {
        let Some((repo_name, _)) = config.repository_of(name) else {
            continue;
        };
        let repo = runner.repository(repo_name).await?;
        let runs = repo.runs(Some(&backup_job(name)), RUNS_READ).await?;
        let labels = format!(
            "schedule=\"{}\",source=\"{}\",repository=\"{}\"",
            esc(name),
            esc(sc.source.get_ref()),
            esc(repo_name)
        );
        for state in [RunState::Succeeded, RunState::Failed, RunState::Skipped] {
            let n = runs.iter().filter(|r| r.state == state).count();
            push(
                "cairn_schedule_runs",
                format!(
                    "cairn_schedule_runs{{{labels},state=\"{}\"}} {n}",
                    state.as_str()
                ),
            );
        }
        let running = runs.iter().any(|r| r.state == RunState::Running);
        push(
            "cairn_schedule_running",
            format!("cairn_schedule_running{{{labels}}} {}", u8::from(running)),
        );
        if let Some(r) = runs.iter().find(|r| r.state == RunState::Succeeded) {
            let t = r.finished.unwrap_or(r.started).timestamp();
            push(
                "cairn_schedule_last_success_timestamp_seconds",
                format!("cairn_schedule_last_success_timestamp_seconds{{{labels}}} {t}"),
            );
            push(
                "cairn_schedule_last_bytes_read",
                format!(
                    "cairn_schedule_last_bytes_read{{{labels}}} {}",
                    r.bytes_read
                ),
            );
            push(
                "cairn_schedule_last_bytes_added",
                format!(
                    "cairn_schedule_last_bytes_added{{{labels}}} {}",
                    r.bytes_added
                ),
            );
            push(
                "cairn_schedule_last_bytes_uploaded",
                format!(
                    "cairn_schedule_last_bytes_uploaded{{{labels}}} {}",
                    r.bytes_uploaded
                ),
            );
        }
        if let Some(r) = runs
            .iter()
            .find(|r| matches!(r.state, RunState::Succeeded | RunState::Failed))
        {
            let t = r.finished.unwrap_or(r.started).timestamp();
            push(
                "cairn_schedule_last_run_timestamp_seconds",
                format!("cairn_schedule_last_run_timestamp_seconds{{{labels}}} {t}"),
            );
            push(
                "cairn_schedule_last_duration_seconds",
                format!(
                    "cairn_schedule_last_duration_seconds{{{labels}}} {}",
                    r.seconds
                ),
            );
            push(
                "cairn_schedule_last_run_failed",
                format!(
                    "cairn_schedule_last_run_failed{{{labels}}} {}",
                    u8::from(r.state == RunState::Failed)
                ),
            );
        }
    }
    for name in config.repositories.keys() {
        let repo = runner.repository(name).await?;
        let snaps = s.listed(name, &repo).await?;
        let labels = format!("repository=\"{}\"", esc(name));
        push(
            "cairn_repository_snapshots",
            format!("cairn_repository_snapshots{{{labels}}} {}", snaps.len()),
        );
        // Stored bytes: the sum of what each backup added (manifests carry it).
        let stored: u64 = snaps.iter().map(|i| i.new_stored_bytes).sum();
        push(
            "cairn_repository_stored_bytes",
            format!("cairn_repository_stored_bytes{{{labels}}} {stored}"),
        );
        // Restore drills, per source: the newest drill, and the newest that passed.
        let drills = repo.drills().await?;
        let mut per_source: std::collections::BTreeMap<&str, (Option<Time>, Option<(Time, bool)>)> =
            std::collections::BTreeMap::new();
        for l in &snaps {
            let Some(d) = drills.get(&*l.id) else {
                continue;
            };
            let e = per_source.entry(&l.source).or_default();
            if d.passed && e.0.is_none_or(|t| d.time > t) {
                e.0 = Some(d.time);
            }
            if e.1.is_none_or(|(t, _)| d.time > t) {
                e.1 = Some((d.time, d.passed));
            }
        }
        for (source, (passed, newest)) in per_source {
            let dl = format!("{labels},source=\"{}\"", esc(source));
            if let Some(t) = passed {
                push(
                    "cairn_drill_last_success_timestamp_seconds",
                    format!(
                        "cairn_drill_last_success_timestamp_seconds{{{dl}}} {}",
                        t.timestamp()
                    ),
                );
            }
            if let Some((_, ok)) = newest {
                push(
                    "cairn_drill_last_passed",
                    format!("cairn_drill_last_passed{{{dl}}} {}", u8::from(ok)),
                );
            }
        }
        for (job, family) in [(PRUNE_JOB, "prune"), (CHECK_JOB, "check")] {
            let runs = repo.runs(Some(job), 20).await?;
            if family == "prune" {
                if let Some(r) = runs.iter().find(|r| r.state == RunState::Succeeded) {
                    push(
                        "cairn_prune_last_freed_bytes",
                        format!("cairn_prune_last_freed_bytes{{{labels}}} {}", r.bytes_freed),
                    );
                    push(
                        "cairn_prune_last_success_timestamp_seconds",
                        format!(
                            "cairn_prune_last_success_timestamp_seconds{{{labels}}} {}",
                            r.finished.unwrap_or(r.started).timestamp()
                        ),
                    );
                }
            } else {
                if let Some(r) = runs
                    .iter()
                    .find(|r| matches!(r.state, RunState::Succeeded | RunState::Failed))
                {
                    push(
                        "cairn_check_last_errors",
                        format!("cairn_check_last_errors{{{labels}}} {}", r.check_errors),
                    );
                }
                if let Some(r) = runs.iter().find(|r| r.state == RunState::Succeeded) {
                    push(
                        "cairn_check_last_success_timestamp_seconds",
                        format!(
                            "cairn_check_last_success_timestamp_seconds{{{labels}}} {}",
                            r.finished.unwrap_or(r.started).timestamp()
                        ),
                    );
                }
            }
        }
    }
    for (name, kind, help, lines) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
    Ok(out)
}
