//! The HTTP API (`/api/v1/…`, JSON), `/metrics`, `/openapi.json`, `/healthz`
//! and the dashboard at `/`.
//!
//! With a token (`CAIRN_API_TOKEN` or the config's `api.token_file`), every
//! route but `/`, `/healthz` and `/openapi.json` needs `Authorization:
//! Bearer TOKEN`; a missing or wrong token is 401. Without a token the
//! daemon listens on loopback only. Tokens are compared in constant time
//! and never logged or echoed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_engine::{ForgetOptions, SnapshotFilter, SnapshotRow, Trigger};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::jobs::{describe, Runner};
use crate::schedules;
use crate::{lock, Shared};

/// The OpenAPI document (checked in; a test keeps it and the routes in step).
pub const OPENAPI: &str = include_str!("../openapi.json");
/// The dashboard: one self-contained page.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// An error answer: a status and a message naming what failed.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let status = if e.chain().any(|c| {
            matches!(
                c.downcast_ref::<cairn_engine::Error>(),
                Some(cairn_engine::Error::SnapshotNotFound { .. })
            )
        }) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self(status, describe(&e))
    }
}

impl From<cairn_engine::Error> for ApiError {
    fn from(e: cairn_engine::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

fn bad_request(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

type ApiResult<T> = Result<T, ApiError>;

/// The router over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v1/health", get(health))
        .route(
            "/api/v1/schedules",
            get(list_schedules).post(create_schedule),
        )
        .route(
            "/api/v1/schedules/{name}",
            get(get_schedule).put(edit_schedule).delete(delete_schedule),
        )
        .route("/api/v1/schedules/{name}/run", post(backup_now))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/backups", get(list_backups))
        .route(
            "/api/v1/backups/{id}",
            get(get_backup).delete(delete_backup),
        )
        .route("/api/v1/backups/{id}/restore", post(start_restore))
        .route("/api/v1/restores", get(list_restores))
        .route("/api/v1/restores/{id}", get(get_restore))
        .route("/api/v1/cost", get(cost))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            auth,
        ));
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(api)
        .with_state(shared)
}

/// Constant-time comparison (the time does not tell how much matched).
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

async fn auth(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "missing or wrong bearer token (Authorization: Bearer TOKEN)" })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<Arc<Shared>>) -> Json<Value> {
    let runner = s.runner();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "schedules": runner.config().schedules.len(),
        "repositories": runner.config().repositories.keys().collect::<Vec<_>>(),
        "sources": runner.config().sources.keys().collect::<Vec<_>>(),
    }))
}

async fn list_schedules(State(s): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(schedules::list(&s).await?)))
}

async fn get_schedule(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    schedules::list(&s)
        .await?
        .into_iter()
        .find(|v| v["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no schedule named {name:?}")))
}

async fn create_schedule(
    State(s): State<Arc<Shared>>,
    Json(body): Json<schedules::Edit>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| bad_request("a new schedule needs a name"))?;
    schedules::write(&s, &name, Some(&body), true).map_err(bad_request)?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))))
}

async fn edit_schedule(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<schedules::Edit>,
) -> ApiResult<Json<Value>> {
    schedules::write(&s, &name, Some(&body), false).map_err(|e| {
        if e.starts_with("no schedule") {
            ApiError(StatusCode::NOT_FOUND, e)
        } else {
            bad_request(e)
        }
    })?;
    Ok(Json(json!({ "name": name })))
}

async fn delete_schedule(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    schedules::write(&s, &name, None, false).map_err(|e| ApiError(StatusCode::NOT_FOUND, e))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn backup_now(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let runner = s.runner();
    if !runner.config().schedules.contains_key(&name) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no schedule named {name:?}"),
        ));
    }
    crate::spawn_run(move || async move {
        if let Err(e) = runner
            .run_schedule(&name, Trigger::Manual, None, 1, None)
            .await
        {
            tracing::error!(schedule = %name, error = %describe(&e), "backup now could not run");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))))
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    schedule: Option<String>,
    job: Option<String>,
    repository: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(s): State<Arc<Shared>>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Value>> {
    let runner = s.runner();
    let job = q.job.or(q.schedule.map(|n| cairn_engine::backup_job(&n)));
    let mut all = Vec::new();
    for name in repositories(&runner, q.repository.as_deref())? {
        let repo = runner.repository(&name).await?;
        all.extend(repo.runs(job.as_deref(), q.limit.unwrap_or(200)).await?);
    }
    all.sort_by(|a, b| b.started.cmp(&a.started));
    all.truncate(q.limit.unwrap_or(200));
    Ok(Json(json!(all)))
}

fn repositories(runner: &Runner, one: Option<&str>) -> ApiResult<Vec<String>> {
    match one {
        Some(n) if runner.config().repositories.contains_key(n) => Ok(vec![n.to_string()]),
        Some(n) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no repository named {n:?}"),
        )),
        None => Ok(runner.config().repositories.keys().cloned().collect()),
    }
}

#[derive(Debug, Deserialize)]
struct RepoQuery {
    repository: Option<String>,
}

async fn one_repository(
    s: &Shared,
    q: Option<&str>,
) -> ApiResult<(String, cairn_engine::Repository)> {
    let runner = s.runner();
    let names = repositories(&runner, q)?;
    let name = names
        .into_iter()
        .next()
        .ok_or_else(|| bad_request("the config names no repository"))?;
    let repo = runner.repository(&name).await?;
    Ok((name, repo))
}

#[derive(Debug, Deserialize)]
struct BackupsQuery {
    repository: Option<String>,
    /// At most this many, newest first (default: all).
    limit: Option<usize>,
    /// After skipping this many of the newest.
    #[serde(default)]
    offset: usize,
}

/// Backups, newest first; `X-Total-Count` says how many there are in all
/// when `limit` or `offset` cuts the list.
async fn list_backups(
    State(s): State<Arc<Shared>>,
    Query(q): Query<BackupsQuery>,
) -> ApiResult<Response> {
    let runner = s.runner();
    let mut rows = Vec::new();
    for name in repositories(&runner, q.repository.as_deref())? {
        let repo = runner.repository(&name).await?;
        rows.extend(s.listed(&name, &repo).await?);
    }
    rows.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.json.cmp(&a.json)));
    let total = rows.len();
    let page = rows
        .iter()
        .skip(q.offset)
        .take(q.limit.unwrap_or(usize::MAX));
    // The rows are serialized once, when their manifest is first read.
    let mut body = String::with_capacity(2 + page.clone().map(|r| r.json.len() + 1).sum::<usize>());
    body.push('[');
    for (i, r) in page.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&r.json);
    }
    body.push(']');
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

async fn get_backup(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<RepoQuery>,
) -> ApiResult<Json<Value>> {
    let (name, repo) = one_repository(&s, q.repository.as_deref()).await?;
    let info = repo
        .find_snapshot_in(&id, &SnapshotFilter::default())
        .await?;
    let mut v = json!(SnapshotRow::from(&info));
    v["repository"] = json!(name);
    v["tags"] = json!(info.snapshot.tags);
    v["qdrant_record"] = json!(info.snapshot.qdrant);
    Ok(Json(v))
}

async fn delete_backup(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<RepoQuery>,
) -> ApiResult<Json<Value>> {
    let (_, repo) = one_repository(&s, q.repository.as_deref()).await?;
    let info = repo
        .find_snapshot_in(&id, &SnapshotFilter::default())
        .await?;
    let summary = repo
        .forget(&ForgetOptions {
            ids: vec![info.id.to_hex()],
            ..ForgetOptions::default()
        })
        .await?;
    s.forget_cached(&info.id);
    Ok(Json(
        json!({ "removed": summary.removed, "note": "the data only this backup used is deleted by the next prune" }),
    ))
}

/// A restore request.
#[derive(Debug, Deserialize)]
pub struct RestoreRequest {
    /// REST URLs of the target cluster's nodes.
    pub to_qdrant: Vec<String>,
    /// Collections to restore (default: all), each optionally renamed.
    #[serde(default)]
    pub collections: Vec<RestoreCollection>,
    /// Point this alias at the restored collection.
    pub swap_alias: Option<String>,
    /// Replace existing collections whose config differs; re-point aliases.
    #[serde(default)]
    pub force: bool,
    /// Repository (default: the first).
    pub repository: Option<String>,
    /// The environment variable holding the target's API key.
    pub api_key_env: Option<String>,
}

/// One collection to restore.
#[derive(Debug, Deserialize)]
pub struct RestoreCollection {
    /// Its name in the backup.
    pub name: String,
    /// The name to restore it as (default: the same).
    pub restore_as: Option<String>,
}

async fn start_restore(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(req): Json<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if req.to_qdrant.is_empty() {
        return Err(bad_request(
            "to_qdrant: name at least one node URL of the target cluster",
        ));
    }
    let (_, repo) = one_repository(&s, req.repository.as_deref()).await?;
    let filter = SnapshotFilter {
        cluster: true,
        collections: req.collections.iter().map(|c| c.name.clone()).collect(),
        ..SnapshotFilter::default()
    };
    let info = repo.find_snapshot_in(&id, &filter).await?;
    let n = s.restore_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let rid = format!("r{n}");
    let progress = Arc::new(crate::RestoreProgress::default());
    let entry = crate::RestoreJob {
        id: rid.clone(),
        snapshot: info.id.to_hex(),
        target: req.to_qdrant.clone(),
        state: "RUNNING".into(),
        error: None,
        summary: None,
        started: chrono::Utc::now(),
        finished: None,
        progress: Arc::clone(&progress),
    };
    lock(&s.restores).insert(rid.clone(), entry);
    let shared = Arc::clone(&s);
    let key = req
        .api_key_env
        .as_deref()
        .and_then(|v| std::env::var(v).ok())
        .and_then(cairn_cluster::ApiKey::new);
    let rid2 = rid.clone();
    crate::spawn_run(move || async move {
        let target = cairn_cluster::QdrantTarget::new(&req.to_qdrant, key);
        let mut opts = cairn_cluster::ClusterRestoreOptions::new(target);
        opts.collections = req
            .collections
            .iter()
            .map(|c| cairn_cluster::Rename {
                backed_up: c.name.clone(),
                restore_as: c
                    .restore_as
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| c.name.clone()),
            })
            .collect();
        opts.force = req.force;
        opts.swap_alias = req.swap_alias.clone().filter(|a| !a.is_empty());
        let r = cairn_cluster::restore(&repo, &info, &opts, progress).await;
        let mut all = lock(&shared.restores);
        if let Some(j) = all.get_mut(&rid2) {
            j.finished = Some(chrono::Utc::now());
            match r {
                Ok(sum) => {
                    j.state = "SUCCEEDED".into();
                    j.summary = serde_json::to_value(&sum).ok();
                }
                Err(e) => {
                    j.state = "FAILED".into();
                    j.error = Some(describe(&anyhow::Error::from(e)));
                }
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": rid }))))
}

async fn list_restores(State(s): State<Arc<Shared>>) -> Json<Value> {
    let all = lock(&s.restores);
    let mut v: Vec<Value> = all.values().map(crate::RestoreJob::to_json).collect();
    v.sort_by(|a, b| b["started"].as_str().cmp(&a["started"].as_str()));
    Json(json!(v))
}

async fn get_restore(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    lock(&s.restores)
        .get(&id)
        .map(|j| Json(j.to_json()))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no restore {id:?}")))
}

/// How many of the latest backups the dashboard's cost chart shows.
const COST_CHART_BACKUPS: usize = 30;

async fn cost(State(s): State<Arc<Shared>>, Query(q): Query<RepoQuery>) -> ApiResult<Json<Value>> {
    let (name, repo) = one_repository(&s, q.repository.as_deref()).await?;
    let mut report = repo.report(&cairn_engine::ReportOptions::default()).await?;
    let mut v = json!(report);
    v["repository_name"] = json!(name);
    // The dashboard's chart is the report's own, over the latest backups.
    let skip = report.backups.len().saturating_sub(COST_CHART_BACKUPS);
    report.backups.drain(..skip);
    v["charts"] = json!({ "added": cairn_report::added_chart(&report) });
    drop(report);
    crate::release_memory();
    Ok(Json(v))
}

async fn metrics(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    let text = crate::metrics::render(&s).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is in the checked-in OpenAPI document,
    /// and the document names no route that does not exist.
    #[test]
    fn the_openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        documented.sort();
        let source = include_str!("api.rs");
        let mut served: Vec<String> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| {
                let rest = rest.trim_start();
                let rest = rest.strip_prefix('"')?;
                Some(rest[..rest.find('"')?].to_string())
            })
            .filter(|p| p.starts_with('/'))
            .collect();
        served.sort();
        served.dedup();
        assert_eq!(served, documented);
    }
}
