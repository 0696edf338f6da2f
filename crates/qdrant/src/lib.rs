//! A small typed client for the parts of Qdrant's REST API that a backup and
//! a restore need: version, collections and their configuration, aliases,
//! cluster topology, shard snapshots (streamed, or created as files, listed,
//! downloaded and deleted), shard snapshot upload, collection, shard-key,
//! payload-index and alias creation, and point counts.
//!
//! It knows nothing of Cairn's repositories. One [`Client`] talks to one node;
//! a cluster is a set of clients.
//!
//! # Contract
//! - Every request carries the API key, when one is set, in the `api-key`
//!   header. The key is never part of an error message, a log line or a
//!   `Debug` output ([`ApiKey`] prints as `***`).
//! - Idempotent requests (GET, DELETE) are retried on connection failures,
//!   timeouts, 429 and 5xx answers, with exponential backoff; requests that
//!   change state are sent once.
//! - Qdrant's error envelope (`{"status": {"error": "…"}}`, or a plain text
//!   body) becomes an [`Error`] that names the node, the operation (with its
//!   collection and shard) and the server's message.
//! - https uses the system's root certificates.

mod types;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use types::{
    AliasDescription, ClusterStatus, CollectionClusterInfo, CollectionInfo, CollectionParams,
    LocalShardInfo, PayloadIndexInfo, PeerInfo, RemoteShardInfo, ReplicaState, SnapshotDescription,
    SnapshotPriority, Version, VersionInfo,
};

/// An API key or JWT. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; `None` for an empty string.
    #[must_use]
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        (!key.trim().is_empty()).then(|| Self(key.trim().to_string()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// What went wrong, without the context [`Error`] adds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: no key, or a wrong one.
    #[error(
        "the node refused the request (HTTP {status}): {message}; the API key is missing or wrong"
    )]
    Unauthorized {
        /// 401.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// 403: the key lacks a permission.
    #[error("the API key lacks a permission for this (HTTP 403): {message}; snapshots need collection read-write access, uploads and collection creation the manage access of a full key")]
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// 404.
    #[error("not found (HTTP 404): {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// Any other non-success answer.
    #[error("HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The node could not be reached, or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// No answer, or no bytes for too long.
    #[error("no answer for {0:?}")]
    Timeout(Duration),
    /// The answer is not the JSON expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// A failed request: the node, the operation and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("Qdrant node {node}: {operation}: {kind}")]
pub struct Error {
    /// The node's base URL.
    pub node: String,
    /// What was being done, naming the collection and shard.
    pub operation: String,
    /// The failure.
    #[source]
    pub kind: ErrorKind,
}

impl Error {
    /// True when the same request may succeed later: transport failures,
    /// timeouts, 408, 429 and 5xx.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Transport(_) | ErrorKind::Timeout(_) => true,
            ErrorKind::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..600).contains(status)
            }
            _ => false,
        }
    }

    /// True for 401 and 403.
    #[must_use]
    pub fn is_auth(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unauthorized { .. } | ErrorKind::Forbidden { .. }
        )
    }

    /// True for 404.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound { .. })
    }

    /// True when the server has no such route (404 or 405 that names no
    /// shard): an older server, not a missing shard.
    #[must_use]
    pub fn is_route_missing(&self) -> bool {
        matches!(self.status(), Some(404 | 405))
            && !self.kind.to_string().to_lowercase().contains("shard ")
    }

    /// The HTTP status, when the node answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Unauthorized { status, .. } | ErrorKind::Status { status, .. } => {
                Some(*status)
            }
            ErrorKind::Forbidden { .. } => Some(403),
            ErrorKind::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of body bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as `api-key` with every request.
    pub api_key: Option<ApiKey>,
    /// Connecting to a node.
    pub connect_timeout: Duration,
    /// A whole JSON request (not snapshot transfers).
    pub request_timeout: Duration,
    /// Attempts for idempotent requests (at least 1).
    pub attempts: u32,
    /// First retry delay; doubled on each attempt.
    pub retry_delay: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            attempts: 4,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// A client for one Qdrant node.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    opts: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

/// Qdrant's success envelope.
#[derive(serde::Deserialize)]
struct Envelope<T> {
    result: Option<T>,
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Client {
    /// A client for the node at `url` (`http://host:6333`, `https://…`).
    ///
    /// # Errors
    /// An unusable URL or TLS setup.
    pub fn new(url: &str, opts: ClientOptions) -> Result<Self> {
        let bad = |reason: String| Error {
            node: url.to_string(),
            operation: "connecting".into(),
            kind: ErrorKind::Transport(reason),
        };
        let mut base = url::Url::parse(url.trim())
            .map_err(|e| bad(format!("not a URL ({e}); expected http(s)://HOST:PORT")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("expected an http:// or https:// URL".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad(
                "credentials in the URL are not accepted (give the API key on its own)".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.set_query(None);
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { http, base, opts })
    }

    /// The node's base URL, without a trailing slash.
    #[must_use]
    pub fn node(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    fn err(&self, operation: &str, kind: ErrorKind) -> Error {
        Error {
            node: self.node(),
            operation: operation.to_string(),
            kind,
        }
    }

    fn url(&self, path: &str) -> url::Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("invariant: relative paths join onto an http base")
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.opts.api_key {
            Some(k) => r.header("api-key", &k.0),
            None => r,
        }
    }

    fn transport(&self, operation: &str, e: &reqwest::Error) -> Error {
        if e.is_timeout() {
            return self.err(operation, ErrorKind::Timeout(self.opts.request_timeout));
        }
        // reqwest's message names the URL (never the key); add the cause.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        self.err(operation, ErrorKind::Transport(msg))
    }

    /// Turns a non-success answer into an error carrying the server's message.
    async fn status_error(&self, operation: &str, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<Value>(&body) {
            Ok(v) => v
                .pointer("/status/error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| v.get("status").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| body.trim().to_string()),
            Err(_) => body.trim().chars().take(500).collect(),
        };
        let message = if message.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string()
        } else {
            message
        };
        let kind = match status {
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthorized {
                status: status.as_u16(),
                message,
            },
            StatusCode::FORBIDDEN => ErrorKind::Forbidden { message },
            StatusCode::NOT_FOUND => ErrorKind::NotFound { message },
            s => ErrorKind::Status {
                status: s.as_u16(),
                message,
            },
        };
        self.err(operation, kind)
    }

    /// Sends a request built by `build`, retrying idempotent ones; returns
    /// the successful response.
    async fn send(
        &self,
        operation: &str,
        idempotent: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let attempts = if idempotent {
            self.opts.attempts.max(1)
        } else {
            1
        };
        let mut delay = self.opts.retry_delay;
        let mut attempt = 1;
        loop {
            let err = match build().send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => self.status_error(operation, resp).await,
                Err(e) => self.transport(operation, &e),
            };
            if attempt >= attempts || !err.is_retryable() {
                return Err(err);
            }
            tracing::debug!(node = %self.node(), %operation, attempt, error = %err.kind, "retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        let resp = self
            .send(operation, idempotent, || {
                let r = self
                    .request(method.clone(), path)
                    .timeout(self.opts.request_timeout);
                match body {
                    Some(b) => r.json(b),
                    None => r,
                }
            })
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport(operation, &e))?;
        let env: Envelope<T> = serde_json::from_slice(&bytes)
            .map_err(|e| self.err(operation, ErrorKind::Decode(e.to_string())))?;
        env.result.ok_or_else(|| {
            self.err(
                operation,
                ErrorKind::Decode("no result in the answer".into()),
            )
        })
    }

    /// Like [`Client::json`] for calls whose result is ignored (may be absent or null).
    async fn call(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<()> {
        self.json::<Value>(operation, method, path, body)
            .await
            .map(drop)
            .or_else(|e| match e.kind {
                ErrorKind::Decode(ref m) if m == "no result in the answer" => Ok(()),
                _ => Err(e),
            })
    }

    /// `GET /`: the server version.
    ///
    /// # Errors
    /// Transport, authentication or decoding failures.
    pub async fn version(&self) -> Result<VersionInfo> {
        let op = "reading the server version";
        let resp = self
            .send(op, true, || {
                self.request(Method::GET, "")
                    .timeout(self.opts.request_timeout)
            })
            .await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(op, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.err(op, ErrorKind::Decode(e.to_string())))
    }

    /// Names of all collections.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn collections(&self) -> Result<Vec<String>> {
        let l: types::CollectionsList = self
            .json("listing collections", Method::GET, "collections", None)
            .await?;
        Ok(l.collections.into_iter().map(|c| c.name).collect())
    }

    /// A collection's status, configuration and payload schema.
    ///
    /// # Errors
    /// As [`Client::version`]; not found.
    pub async fn collection_info(&self, collection: &str) -> Result<CollectionInfo> {
        self.json(
            &format!("reading collection {collection}"),
            Method::GET,
            &format!("collections/{}", seg(collection)),
            None,
        )
        .await
    }

    /// True when the collection exists.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn collection_exists(&self, collection: &str) -> Result<bool> {
        match self.collection_info(collection).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every alias.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn aliases(&self) -> Result<Vec<AliasDescription>> {
        let l: types::AliasesList = self
            .json("listing aliases", Method::GET, "aliases", None)
            .await?;
        Ok(l.aliases)
    }

    /// `GET /cluster`: this node's peer id and every peer.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn cluster(&self) -> Result<ClusterStatus> {
        self.json("reading the cluster status", Method::GET, "cluster", None)
            .await
    }

    /// Which replicas of a collection's shards this node and the others hold.
    ///
    /// # Errors
    /// As [`Client::version`]; not found.
    pub async fn collection_cluster(&self, collection: &str) -> Result<CollectionClusterInfo> {
        self.json(
            &format!("reading the shard placement of collection {collection}"),
            Method::GET,
            &format!("collections/{}/cluster", seg(collection)),
            None,
        )
        .await
    }

    /// Streams a snapshot of a local shard, made on the fly: no file is
    /// written on the node. Each item is a piece of the tar; a gap of more
    /// than `stall` between pieces ends the stream with a timeout error.
    ///
    /// # Errors
    /// The request failing (a non-local shard gives 400, an unknown one 404);
    /// errors mid-stream come as stream items.
    pub async fn stream_shard_snapshot(
        &self,
        collection: &str,
        shard: u32,
        stall: Duration,
    ) -> Result<ByteStream> {
        let op = format!("streaming a snapshot of collection {collection}, shard {shard}");
        let path = format!("collections/{}/shards/{shard}/snapshot", seg(collection));
        let resp = self
            .send(&op, true, || self.request(Method::GET, &path))
            .await?;
        Ok(self.body_stream(op, resp, stall))
    }

    /// Streams a partial snapshot of a local shard (Qdrant 1.15 and later;
    /// the route is not in Qdrant's published API): a complete shard
    /// snapshot holding only the segment files that changed since
    /// `manifest` (`{}`: everything), with each live segment's manifest
    /// (`segments/<id>/files/segment_manifest.json`) among its members.
    /// `None` when nothing changed (the node answers 304).
    ///
    /// # Errors
    /// As [`Client::version`]; 404 or 405 from servers without the route.
    pub async fn stream_partial_shard_snapshot(
        &self,
        collection: &str,
        shard: u32,
        manifest: &Value,
        stall: Duration,
    ) -> Result<Option<ByteStream>> {
        let op = format!("streaming a partial snapshot of collection {collection}, shard {shard}");
        let path = format!(
            "collections/{}/shards/{shard}/snapshot/partial/create",
            seg(collection)
        );
        let resp = match self
            .request(Method::POST, &path)
            .json(manifest)
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::NOT_MODIFIED => return Ok(None),
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return Err(self.status_error(&op, r).await),
            Err(e) => return Err(self.transport(&op, &e)),
        };
        Ok(Some(self.body_stream(op, resp, stall)))
    }

    fn body_stream(
        &self,
        operation: String,
        resp: reqwest::Response,
        stall: Duration,
    ) -> ByteStream {
        let client = self.clone();
        let inner = resp.bytes_stream();
        let stream = futures::stream::unfold(
            (inner, client, operation, false),
            move |(mut inner, client, op, done)| async move {
                if done {
                    return None;
                }
                match tokio::time::timeout(stall, inner.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(b))) => Some((Ok(b), (inner, client, op, false))),
                    Ok(Some(Err(e))) => {
                        let err = client.transport(&op, &e);
                        Some((Err(err), (inner, client, op, true)))
                    }
                    Err(_) => {
                        let err = client.err(&op, ErrorKind::Timeout(stall));
                        Some((Err(err), (inner, client, op, true)))
                    }
                }
            },
        );
        Box::pin(stream.fuse())
    }

    /// Creates a snapshot file of a local shard on the node (for servers
    /// that cannot stream one).
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn create_shard_snapshot(
        &self,
        collection: &str,
        shard: u32,
    ) -> Result<SnapshotDescription> {
        self.json(
            &format!("creating a snapshot file of collection {collection}, shard {shard}"),
            Method::POST,
            &format!(
                "collections/{}/shards/{shard}/snapshots?wait=true",
                seg(collection)
            ),
            None,
        )
        .await
    }

    /// Snapshot files of a shard on this node.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn list_shard_snapshots(
        &self,
        collection: &str,
        shard: u32,
    ) -> Result<Vec<SnapshotDescription>> {
        self.json(
            &format!("listing snapshot files of collection {collection}, shard {shard}"),
            Method::GET,
            &format!("collections/{}/shards/{shard}/snapshots", seg(collection)),
            None,
        )
        .await
    }

    /// Downloads a shard snapshot file as a stream.
    ///
    /// # Errors
    /// As [`Client::stream_shard_snapshot`].
    pub async fn download_shard_snapshot(
        &self,
        collection: &str,
        shard: u32,
        name: &str,
        stall: Duration,
    ) -> Result<ByteStream> {
        let op =
            format!("downloading snapshot file {name} of collection {collection}, shard {shard}");
        let path = format!(
            "collections/{}/shards/{shard}/snapshots/{}",
            seg(collection),
            seg(name)
        );
        let resp = self
            .send(&op, true, || self.request(Method::GET, &path))
            .await?;
        Ok(self.body_stream(op, resp, stall))
    }

    /// Deletes a shard snapshot file; a missing file is not an error.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn delete_shard_snapshot(
        &self,
        collection: &str,
        shard: u32,
        name: &str,
    ) -> Result<()> {
        let r = self
            .call(
                &format!("deleting snapshot file {name} of collection {collection}, shard {shard}"),
                Method::DELETE,
                &format!(
                    "collections/{}/shards/{shard}/snapshots/{}?wait=true",
                    seg(collection),
                    seg(name)
                ),
                None,
            )
            .await;
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Snapshot files of a whole collection on this node.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn list_collection_snapshots(
        &self,
        collection: &str,
    ) -> Result<Vec<SnapshotDescription>> {
        self.json(
            &format!("listing snapshot files of collection {collection}"),
            Method::GET,
            &format!("collections/{}/snapshots", seg(collection)),
            None,
        )
        .await
    }

    /// Deletes a collection snapshot file; a missing file is not an error.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn delete_collection_snapshot(&self, collection: &str, name: &str) -> Result<()> {
        let r = self
            .call(
                &format!("deleting snapshot file {name} of collection {collection}"),
                Method::DELETE,
                &format!(
                    "collections/{}/snapshots/{}?wait=true",
                    seg(collection),
                    seg(name)
                ),
                None,
            )
            .await;
        match r {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Uploads a shard snapshot (multipart field `snapshot`) and waits until
    /// the node has recovered the shard from it. `body` is streamed as it
    /// comes; `length` must be its exact size. `checksum` is the sha256 of
    /// the whole body, which the node verifies.
    ///
    /// A node that takes no byte of the body for `stall`, or that has the
    /// whole body and does not answer within `stall` plus a second per
    /// 50 MiB (its time to recover the shard), fails the upload with
    /// [`ErrorKind::Timeout`]: a node that accepts the connection and then
    /// hangs does not hang the restore.
    ///
    /// # Errors
    /// As [`Client::version`]; a checksum mismatch (400); a body stream error;
    /// a stalled upload.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_shard_snapshot<S, E>(
        &self,
        collection: &str,
        shard: u32,
        file_name: &str,
        body: S,
        length: u64,
        priority: SnapshotPriority,
        checksum: Option<&str>,
        stall: Duration,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let op = format!("uploading a snapshot of collection {collection}, shard {shard}");
        let mut path = format!(
            "collections/{}/shards/{shard}/snapshots/upload?wait=true&priority={}",
            seg(collection),
            priority.as_str()
        );
        if let Some(c) = checksum {
            path.push_str("&checksum=");
            path.push_str(c);
        }
        // What the request has taken of the body so far, for the watchdog.
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&taken);
        let body = body.map_ok(move |b| {
            counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            b
        });
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(body.map_err(Into::into)),
            length,
        )
        .file_name(file_name.to_string());
        let part = part
            .mime_str("application/octet-stream")
            .map_err(|e| self.err(&op, ErrorKind::Transport(e.to_string())))?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);
        // Sent once: a body stream cannot be replayed.
        let send = self.request(Method::POST, &path).multipart(form).send();
        tokio::pin!(send);
        let (mut seen, mut since) = (0u64, tokio::time::Instant::now());
        let tick = stall.min(Duration::from_secs(1));
        let resp = loop {
            tokio::select! {
                r = &mut send => break r.map_err(|e| self.transport(&op, &e))?,
                () = tokio::time::sleep(tick) => {
                    let now = taken.load(std::sync::atomic::Ordering::Relaxed);
                    if now != seen {
                        (seen, since) = (now, tokio::time::Instant::now());
                        continue;
                    }
                    let limit = if now >= length {
                        stall + Duration::from_secs(length / (50 << 20))
                    } else {
                        stall
                    };
                    if since.elapsed() >= limit {
                        tracing::warn!(node = %self.node(), collection, shard, sent = now, of = length, "the upload made no progress for {limit:?}; giving up on it");
                        return Err(self.err(&op, ErrorKind::Timeout(limit)));
                    }
                }
            }
        };
        if !resp.status().is_success() {
            return Err(self.status_error(&op, resp).await);
        }
        Ok(())
    }

    /// Creates a collection from a `PUT /collections/{c}` body.
    ///
    /// # Errors
    /// As [`Client::version`]; the collection exists (409 or 400).
    pub async fn create_collection(&self, collection: &str, body: &Value) -> Result<()> {
        self.call(
            &format!("creating collection {collection}"),
            Method::PUT,
            &format!("collections/{}?wait=true", seg(collection)),
            Some(body),
        )
        .await
    }

    /// Sets (or, with `null` values, removes) keys of a collection's
    /// metadata (`PATCH /collections/{c}`).
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn update_collection_metadata(
        &self,
        collection: &str,
        metadata: &Value,
    ) -> Result<()> {
        self.call(
            &format!("updating the metadata of collection {collection}"),
            Method::PATCH,
            &format!("collections/{}?wait=true", seg(collection)),
            Some(&serde_json::json!({ "metadata": metadata })),
        )
        .await
    }

    /// Deletes a collection and its data.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn delete_collection(&self, collection: &str) -> Result<()> {
        self.call(
            &format!("deleting collection {collection}"),
            Method::DELETE,
            &format!("collections/{}", seg(collection)),
            None,
        )
        .await
    }

    /// Creates the shards of one shard key (custom sharding).
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn create_shard_key(
        &self,
        collection: &str,
        key: &Value,
        shards: Option<u32>,
        replication_factor: Option<u32>,
    ) -> Result<()> {
        let mut body = json!({ "shard_key": key });
        if let Some(n) = shards {
            body["shards_number"] = json!(n);
        }
        if let Some(rf) = replication_factor {
            body["replication_factor"] = json!(rf);
        }
        self.call(
            &format!("creating shard key {key} of collection {collection}"),
            Method::PUT,
            &format!("collections/{}/shards?wait=true", seg(collection)),
            Some(&body),
        )
        .await
    }

    /// Creates a payload index.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn create_payload_index(
        &self,
        collection: &str,
        field: &str,
        schema: &Value,
    ) -> Result<()> {
        self.call(
            &format!("creating the payload index on {field} of collection {collection}"),
            Method::PUT,
            &format!("collections/{}/index?wait=true", seg(collection)),
            Some(&json!({ "field_name": field, "field_schema": schema })),
        )
        .await
    }

    /// Applies alias actions (`create_alias`, `delete_alias`, `rename_alias`)
    /// atomically, in one request.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn update_aliases(&self, actions: Vec<Value>) -> Result<()> {
        self.call(
            "updating aliases",
            Method::POST,
            "collections/aliases",
            Some(&json!({ "actions": actions })),
        )
        .await
    }

    /// The exact number of points in a collection.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn count_exact(&self, collection: &str) -> Result<u64> {
        let r: types::CountResult = self
            .json(
                &format!("counting the points of collection {collection}"),
                Method::POST,
                &format!("collections/{}/points/count", seg(collection)),
                Some(&json!({ "exact": true })),
            )
            .await?;
        Ok(r.count)
    }

    /// Upserts points, waiting for them to apply. `body` is Qdrant's upsert
    /// body: `{"points": [{id, vector, payload}, …]}`, with `"shard_key"`
    /// for custom sharding.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn upsert(&self, collection: &str, body: &Value) -> Result<()> {
        self.call(
            &format!("upserting points into collection {collection}"),
            Method::PUT,
            &format!("collections/{}/points?wait=true", seg(collection)),
            Some(body),
        )
        .await
    }

    /// The first `limit` points of a collection in id order, with their
    /// vectors and payloads, as Qdrant returns them.
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn scroll(&self, collection: &str, limit: usize) -> Result<Vec<Value>> {
        let r: Value = self
            .json(
                &format!("reading points of collection {collection}"),
                Method::POST,
                &format!("collections/{}/points/scroll", seg(collection)),
                Some(&json!({ "limit": limit, "with_vector": true, "with_payload": true })),
            )
            .await?;
        Ok(r["points"].as_array().cloned().unwrap_or_default())
    }

    /// Ids of the exact nearest `limit` points to `vector` (no index used).
    /// `extra` is merged into the query body (e.g. `{"shard_key": …}`).
    ///
    /// # Errors
    /// As [`Client::version`].
    pub async fn exact_top(
        &self,
        collection: &str,
        vector: &[f32],
        limit: usize,
        extra: Option<&Value>,
    ) -> Result<Vec<Value>> {
        let mut body = json!({ "query": vector, "limit": limit, "params": { "exact": true } });
        if let (Some(Value::Object(extra)), Some(obj)) = (extra, body.as_object_mut()) {
            obj.extend(extra.clone());
        }
        let r: types::QueryResult = self
            .json(
                &format!("querying collection {collection}"),
                Method::POST,
                &format!("collections/{}/points/query", seg(collection)),
                Some(&body),
            )
            .await?;
        Ok(r.points.into_iter().map(|p| p.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server answering every connection with `response`;
    /// returns its URL and the requests it saw.
    async fn serve(
        response: &'static str,
        connections: usize,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(response.as_bytes()).await.expect("write");
                s.shutdown().await.ok();
            }
            seen
        });
        (url, task)
    }

    fn opts(key: Option<&str>) -> ClientOptions {
        ClientOptions {
            api_key: key.and_then(ApiKey::new),
            attempts: 3,
            retry_delay: Duration::from_millis(10),
            ..ClientOptions::default()
        }
    }

    #[tokio::test]
    async fn error_envelope_names_node_operation_and_message() {
        let body =
            r#"{"status":{"error":"Not found: Collection `missing` doesn't exist!"},"time":0.0}"#;
        let resp = Box::leak(
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, task) = serve(resp, 1).await;
        let c = Client::new(&url, opts(Some("s3cret-key"))).expect("client");
        let e = c.collection_info("missing").await.expect_err("404");
        let msg = e.to_string();
        assert!(e.is_not_found(), "{msg}");
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.contains("collection missing"), "{msg}");
        assert!(msg.contains("doesn't exist"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(!format!("{c:?} {e:?}").contains("s3cret"));
        let seen = task.await.expect("server");
        assert!(seen[0].contains("api-key: s3cret-key"), "{}", seen[0]);
    }

    #[tokio::test]
    async fn idempotent_requests_are_retried_on_5xx_and_others_are_not() {
        let resp = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy";
        let (url, task) = serve(resp, 3).await;
        let c = Client::new(&url, opts(None)).expect("client");
        let e = c.collections().await.expect_err("503");
        assert_eq!(e.status(), Some(503));
        assert_eq!(task.await.expect("server").len(), 3, "GET tried 3 times");

        let (url, task) = serve(resp, 1).await;
        let c = Client::new(&url, opts(None)).expect("client");
        let e = c.create_collection("x", &json!({})).await.expect_err("503");
        assert!(e.to_string().contains("creating collection x"), "{e}");
        assert_eq!(task.await.expect("server").len(), 1, "PUT sent once");
    }

    #[tokio::test]
    async fn plain_text_errors_and_bad_json_are_reported() {
        let resp = "HTTP/1.1 401 Unauthorized\r\ncontent-length: 29\r\nconnection: close\r\n\r\nInvalid API key or JWT       ";
        let (url, _task) = serve(resp, 1).await;
        let c = Client::new(&url, opts(Some("wrong"))).expect("client");
        let e = c.collections().await.expect_err("401");
        assert!(e.is_auth());
        assert!(e.to_string().contains("Invalid API key or JWT"), "{e}");
        assert!(e.to_string().contains("API key is missing or wrong"), "{e}");

        let resp = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{\"result\"";
        let (url, _task) = serve(resp, 1).await;
        let c = Client::new(&url, opts(None)).expect("client");
        let e = c.collections().await.expect_err("bad json");
        assert!(matches!(e.kind, ErrorKind::Decode(_)), "{e}");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("ftp://x", opts(None)).is_err());
        assert!(Client::new("http://user:pw@host:6333", opts(None)).is_err());
        let c = Client::new("http://127.0.0.1:6333", opts(None)).expect("ok");
        assert_eq!(c.node(), "http://127.0.0.1:6333");
        assert_eq!(
            c.url("collections/a%20b/cluster").as_str(),
            "http://127.0.0.1:6333/collections/a%20b/cluster"
        );
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
