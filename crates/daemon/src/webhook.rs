//! Notifications: a JSON POST to each configured webhook when a run fails
//! (and, where asked, when one succeeds). Bodies: the run record (`json`),
//! Slack-style incoming webhooks (`slack`: `{"text": …}`), or Alertmanager's
//! alert list (`alertmanager`). A webhook URL can hold a secret (Slack's
//! do): it is never logged, only the host it points at.

use std::time::Duration;

use cairn_config::Config;
use cairn_engine::{RunRecord, RunState};
use serde_json::{json, Value};

/// One target.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    on_failure: bool,
    on_success: bool,
    format: String,
}

/// Sends notifications to the config's webhooks.
#[derive(Debug, Clone)]
pub struct Notifier {
    targets: Vec<Target>,
    http: reqwest::Client,
}

/// The host a URL points at, for logs (never the path or query, which may
/// hold a token).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "(unparsable URL)".into())
}

impl Notifier {
    /// The targets of `config` whose URL can be resolved now (a missing
    /// variable or file is logged by name and skipped).
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let mut targets = Vec::new();
        for (i, w) in config.webhooks.iter().enumerate() {
            let url = if let Some(u) = &w.url {
                Some(u.get_ref().clone())
            } else if let Some(var) = &w.url_env {
                let v = std::env::var(var).ok();
                if v.is_none() {
                    tracing::warn!(webhook = i, variable = %var, "webhook URL variable is not set; this webhook is off");
                }
                v
            } else if let Some(f) = &w.url_file {
                match std::fs::read_to_string(f) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e) => {
                        tracing::warn!(webhook = i, file = %f.display(), error = %e, "cannot read the webhook URL file; this webhook is off");
                        None
                    }
                }
            } else {
                None
            };
            let Some(url) = url else { continue };
            let on: Vec<&str> = w.on.iter().map(|o| o.get_ref().as_str()).collect();
            targets.push(Target {
                url,
                on_failure: on.is_empty() || on.contains(&"failure"),
                on_success: on.contains(&"success"),
                format: w
                    .format
                    .as_ref()
                    .map_or_else(|| "json".to_string(), |f| f.get_ref().clone()),
            });
        }
        Self {
            targets,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Notifies every target that wants to hear of `rec`.
    pub async fn run_finished(&self, rec: &RunRecord) {
        for t in &self.targets {
            let wanted = match rec.state {
                RunState::Failed => t.on_failure,
                RunState::Succeeded => t.on_success,
                RunState::Running | RunState::Skipped => false,
            };
            if !wanted {
                continue;
            }
            let body = body(&t.format, rec);
            let mut sent = false;
            for attempt in 1..=3u32 {
                match self.http.post(&t.url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        sent = true;
                        break;
                    }
                    Ok(r) => {
                        tracing::warn!(host = %host_of(&t.url), status = r.status().as_u16(), attempt, "webhook refused the notification")
                    }
                    Err(e) => {
                        tracing::warn!(host = %host_of(&t.url), error = %e.without_url(), attempt, "webhook unreachable")
                    }
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            if !sent {
                tracing::error!(host = %host_of(&t.url), job = %rec.job, run = rec.seq, "notification not delivered after 3 attempts");
            }
        }
    }
}

/// One line a person reads: "cairn: backup-daily run 4 FAILED on host: …".
fn summary(rec: &RunRecord) -> String {
    let host = &rec.host;
    let mut s = format!(
        "cairn: {} run {} {} on {host} after {:.1} s",
        rec.job,
        rec.seq,
        rec.state.as_str(),
        rec.seconds
    );
    if let Some(r) = &rec.reason {
        s.push_str(": ");
        s.push_str(r);
    }
    s
}

/// The body for `format`.
#[must_use]
pub fn body(format: &str, rec: &RunRecord) -> Value {
    match format {
        "slack" => json!({ "text": summary(rec) }),
        "alertmanager" => {
            let mut alert = json!({
                "labels": {
                    "alertname": "CairnRunFailed",
                    "job": rec.job,
                    "severity": "critical",
                },
                "annotations": {
                    "summary": summary(rec),
                    "description": rec.reason.clone().unwrap_or_default(),
                },
                "startsAt": rec.started.to_rfc3339(),
            });
            if rec.state != RunState::Failed {
                // A success resolves the alert.
                alert["endsAt"] = Value::String(chrono::Utc::now().to_rfc3339());
            }
            json!([alert])
        }
        _ => {
            json!({ "event": format!("run.{}", rec.state.as_str().to_lowercase()), "summary": summary(rec), "run": rec })
        }
    }
}
