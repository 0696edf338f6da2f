//! Schedules as the API shows and edits them. The config file stays the
//! one source of truth: an edit rewrites its `[schedules.NAME]` table
//! (the rest of the file, comments included, is kept), is checked as
//! `cairn config check` would check it, and only then replaces the file
//! (a temporary file renamed over it); the daemon then loads it again.

use anyhow::Result;
use cairn_engine::{backup_job, describe_policy, RunState};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Shared;

/// A schedule as the API creates or edits it.
#[derive(Debug, Deserialize)]
pub struct Edit {
    /// Its name (on create).
    pub name: Option<String>,
    /// The source it backs up.
    pub source: Option<String>,
    /// The repository it writes.
    pub repository: Option<String>,
    /// When: cron or `@daily`, `@weekly`, `@monthly`.
    pub cron: Option<String>,
    /// Time zone.
    pub timezone: Option<String>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Paused or running.
    pub enabled: Option<bool>,
    /// Retention: `days`, `keep_daily`, `keep_weekly`, `keep_monthly`,
    /// `min_count`, … as in the config.
    pub retention: Option<serde_json::Map<String, Value>>,
}

/// Every schedule with its next fire time and its last run.
///
/// # Errors
/// A repository that cannot be read.
pub async fn list(s: &Shared) -> Result<Vec<Value>> {
    let runner = s.runner();
    let config = runner.config();
    let next = s
        .next
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut out = Vec::new();
    for (name, sc) in &config.schedules {
        let job = backup_job(name);
        let repo_name = config.repository_of(name).map(|(n, _)| n.to_string());
        let mut last = Value::Null;
        let mut last_success = Value::Null;
        if let Some(rn) = &repo_name {
            let repo = runner.repository(rn).await?;
            let runs = repo.runs(Some(&job), 50).await?;
            if let Some(r) = runs.iter().find(|r| r.state != RunState::Skipped) {
                last = json!(r);
            }
            if let Some(r) = runs.iter().find(|r| r.state == RunState::Succeeded) {
                last_success = json!(r.finished);
            }
        }
        let retention = sc.retention.as_ref().map(|r| {
            let r = r.get_ref();
            json!({
                "days": r.days, "keep_last": r.keep_last, "keep_hourly": r.keep_hourly,
                "keep_daily": r.keep_daily, "keep_weekly": r.keep_weekly,
                "keep_monthly": r.keep_monthly, "keep_yearly": r.keep_yearly,
                "min_count": r.min_count, "keep_tags": r.keep_tags,
                "description": describe_policy(&r.policy()),
            })
        });
        out.push(json!({
            "name": name,
            "source": sc.source.get_ref(),
            "repository": repo_name,
            "cron": sc.cron.get_ref(),
            "timezone": sc.timezone.as_ref().map(|t| t.get_ref().clone()).or_else(|| config.timezone.as_ref().map(|t| t.get_ref().clone())).unwrap_or_else(|| "UTC".into()),
            "tags": sc.tags,
            "enabled": sc.enabled,
            "retention": retention,
            "next_run": next.get(&job).copied().flatten(),
            "last_run": last,
            "last_success": last_success,
        }));
    }
    Ok(out)
}

fn set_str(t: &mut toml_edit::Table, key: &str, v: Option<&String>) {
    if let Some(v) = v {
        if v.is_empty() {
            t.remove(key);
        } else {
            t[key] = toml_edit::value(v.as_str());
        }
    }
}

/// Creates (`create`), edits, or with `edit` `None` deletes schedule
/// `name`, then asks the daemon to reload.
///
/// # Errors
/// A message naming what is wrong (the problems `cairn config check` would
/// print, a name taken or unknown), the file untouched.
pub fn write(s: &Shared, name: &str, edit: Option<&Edit>, create: bool) -> Result<(), String> {
    let path = &s.config_path;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("{} no longer parses: {e}", path.display()))?;
    if doc.get("schedules").is_none() {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        doc["schedules"] = toml_edit::Item::Table(t);
    }
    let schedules = doc["schedules"]
        .as_table_mut()
        .ok_or_else(|| "schedules is not a table in the config".to_string())?;
    let exists = schedules.contains_key(name);
    match (edit, create, exists) {
        (_, true, true) => return Err(format!("a schedule named {name:?} exists already")),
        (_, false, false) => return Err(format!("no schedule named {name:?}")),
        (None, _, _) => {
            schedules.remove(name);
        }
        (Some(e), _, _) => {
            if !schedules.contains_key(name) {
                schedules[name] = toml_edit::Item::Table(toml_edit::Table::new());
            }
            let t = schedules[name]
                .as_table_mut()
                .ok_or_else(|| format!("schedules.{name} is not a table"))?;
            set_str(t, "source", e.source.as_ref());
            set_str(t, "repository", e.repository.as_ref());
            set_str(t, "cron", e.cron.as_ref());
            set_str(t, "timezone", e.timezone.as_ref());
            if let Some(tags) = &e.tags {
                let mut a = toml_edit::Array::new();
                for tag in tags {
                    a.push(tag.as_str());
                }
                t["tags"] = toml_edit::value(a);
            }
            if let Some(en) = e.enabled {
                t["enabled"] = toml_edit::value(en);
            }
            if let Some(r) = &e.retention {
                let mut rt = toml_edit::Table::new();
                for (k, v) in r {
                    match v {
                        Value::Null => {}
                        Value::Number(n) => {
                            let n = n
                                .as_i64()
                                .ok_or_else(|| format!("retention.{k}: expected a whole number"))?;
                            rt[k.as_str()] = toml_edit::value(n);
                        }
                        Value::Array(a) => {
                            let mut arr = toml_edit::Array::new();
                            for x in a {
                                arr.push(
                                    x.as_str().ok_or_else(|| {
                                        format!("retention.{k}: expected strings")
                                    })?,
                                );
                            }
                            rt[k.as_str()] = toml_edit::value(arr);
                        }
                        _ => return Err(format!("retention.{k}: expected a number")),
                    }
                }
                t["retention"] = toml_edit::Item::Table(rt);
            }
        }
    }
    let new = doc.to_string();
    let loaded = cairn_config::parse(&new).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!(
            "the edit would make the config invalid: {}",
            list.join("; ")
        )
    })?;
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, &new).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    // Handlers see the edit at once; the daemon then restarts the
    // schedules. Every runner shares the daemon's stop flag.
    let mut runner = crate::Runner::new(
        std::sync::Arc::new(loaded.config),
        s.cache_root.clone(),
        s.lease,
    )
    .with_password(s.password.clone());
    runner.cancel = std::sync::Arc::clone(&s.runner().cancel);
    *s.runner
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(runner);
    s.reload.send_modify(|n| *n += 1);
    Ok(())
}
