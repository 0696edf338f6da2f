//! Repository storage: where each kind of file lives and how it is written.
//!
//! Every access goes through one trait, [`Backend`], implemented for a local
//! directory ([`LocalBackend`]) and for any `object_store` store
//! ([`ObjectStoreBackend`]: S3, GCS, Azure, in-memory). Wrappers implement
//! it around another backend and compose: [`counting::CountingBackend`]
//! counts requests and bytes (what a command costs), and
//! `faulty::FaultyBackend` (feature `test-util`; not in the release
//! binary) injects errors, timeouts, slow reads and writes that land but
//! report failure. [`RepoStore`] is the façade the
//! engine uses.
//!
//! A repository location is a plain path or a `file://`, `s3://`, `gs://` or
//! `az://` URL. Cloud credentials and endpoints come from the standard
//! environment variables of each provider (`AWS_*`, `GOOGLE_*`, `AZURE_*`),
//! read by object_store's builders; `AWS_ENDPOINT_URL` points at any
//! S3-compatible server.
//!
//! # Write contract
//! [`RepoStore::put_new`] never replaces an object (`PutMode::Create`). Packs
//! and index files are named by the hash of their bytes, so rewriting one
//! writes identical bytes; [`RepoStore::put_content_addressed`] may use
//! multipart uploads for them.
//!
//! On a local repository every write is durable before it returns: the file
//! is written under a temporary name (which listings skip), flushed with
//! `fsync` ([`durable`], bypassing the page cache for large files), then
//! linked (create-only) or renamed into place and its directory flushed. The
//! backup's write ordering (pack, then index file, then manifest) therefore
//! holds across power loss, as it does on object stores.

mod backend;
#[cfg(any(test, feature = "test-util"))]
pub mod contract;
pub mod counting;
pub mod crash;
pub mod durable;
#[cfg(any(test, feature = "test-util"))]
pub mod faulty;
pub mod http;
pub mod objectlock;
pub mod sealed;
pub mod throttled;

pub use backend::{
    Backend, LocalBackend, ObjectInfo, ObjectStoreBackend, WriteMode, MULTIPART_THRESHOLD,
};

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;

/// Storage errors. Each names the object or location concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{key} not found in {location}")]
    NotFound {
        /// Repository location.
        location: String,
        /// Object key within the repository.
        key: String,
    },
    /// A create-only write found the object already there.
    #[error("{key} already exists in {location}")]
    AlreadyExists {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
    },
    /// The location string is not usable.
    #[error("invalid repository location {location:?}: {reason}")]
    InvalidLocation {
        /// What was given.
        location: String,
        /// Why it was refused.
        reason: String,
    },
    /// A local file system failure (not retried: the disk said no).
    #[error("cannot access {key} in {location}: {source}")]
    Io {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A ranged read asked for bytes past the end of the object.
    #[error(
        "{key} in {location} ends before the bytes asked for ({start}..{end}: {got} of them exist)"
    )]
    OutOfRange {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
        /// How many of the requested bytes exist.
        got: u64,
        /// Requested start.
        start: u64,
        /// Requested end (exclusive).
        end: u64,
    },
    /// An object of an encrypted repository that does not open with its
    /// keys (damaged, or written with another key).
    #[error("{key} in {location} {reason}")]
    Undecryptable {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An Object Lock request failed (a bucket without Object Lock, a
    /// refused retention change, missing permissions).
    #[error("object lock of {key} in {location}: {reason}")]
    ObjectLock {
        /// Repository location.
        location: String,
        /// Object key (or "the bucket").
        key: String,
        /// What the store answered.
        reason: String,
    },
    /// The object is under Object Lock: nothing was sent to delete it.
    #[error("{key} in {location} is locked until {until}")]
    Locked {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
        /// Retained until then.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The key in use is write-only and the object is sealed to the
    /// repository key (only a full key opens it).
    #[error("{key} in {location} cannot be read with the key in use: it is write-only (it adds backups; restoring, checking, pruning and listing backups need a full key)")]
    WriteOnly {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
    },
    /// Any other backend failure.
    #[error("storage error on {key} in {location}: {source}")]
    Backend {
        /// Repository location.
        location: String,
        /// Object key.
        key: String,
        /// Cause.
        #[source]
        source: object_store::Error,
    },
}

impl Error {
    /// True for failures worth retrying at a higher level (object_store has
    /// already retried transient HTTP errors by the time this is seen).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend {
                source: source @ object_store::Error::Generic { store, .. },
                ..
            } if *store != LOCAL_STORE => !has_final_status(source),
            _ => false,
        }
    }

    /// The status of a request no retry can change ([`http::FinalStatus`]),
    /// if that is what this error is.
    #[must_use]
    pub fn final_status(&self) -> Option<u16> {
        match self {
            Self::Backend { source, .. } => final_status(source),
            _ => None,
        }
    }
}

fn final_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(f) = e.downcast_ref::<http::FinalStatus>() {
            return Some(f.status);
        }
        cur = e.source();
    }
    None
}

fn has_final_status(e: &object_store::Error) -> bool {
    final_status(e).is_some()
}

/// The name object_store's local file system gives its errors: those are
/// the disk's answers, not transient network failures.
const LOCAL_STORE: &str = "LocalFileSystem";

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of file in a repository and their key prefixes.
pub mod keys {
    use cairn_model::{IndexId, PackId, SnapshotId};

    /// The repository config.
    pub const CONFIG: &str = "config";
    /// Directory of index files.
    pub const INDEX_DIR: &str = "index";
    /// Directory of snapshot manifests.
    pub const SNAPSHOT_DIR: &str = "snapshots";
    /// Directory of packs.
    pub const PACK_DIR: &str = "packs";
    /// Directory of leases of running writers.
    pub const LOCK_DIR: &str = "locks";
    /// Directory of prune plans.
    pub const GC_DIR: &str = "gc";
    /// Directory of run records, one directory per job.
    pub const RUN_DIR: &str = "runs";
    /// Directory of snapshot files made on Qdrant nodes and not yet deleted.
    pub const PENDING_DIR: &str = "pending";
    /// Directory of key objects (encrypted repositories).
    pub const KEY_DIR: &str = "keys";
    /// Directory of restore drill outcomes, one per snapshot drilled.
    pub const DRILL_DIR: &str = "drills";

    /// Key of the latest drill outcome of a snapshot.
    #[must_use]
    pub fn drill(id: &SnapshotId) -> String {
        format!("{DRILL_DIR}/{}", id.to_hex())
    }

    /// Key of a key object.
    #[must_use]
    pub fn key(name: &str) -> String {
        format!("{KEY_DIR}/{name}")
    }

    /// Key of a lease.
    #[must_use]
    pub fn lock(name: &str) -> String {
        format!("{LOCK_DIR}/{name}")
    }

    /// Directory of one job's run records.
    #[must_use]
    pub fn runs(job: &str) -> String {
        format!("{RUN_DIR}/{job}")
    }

    /// Key of a record of a snapshot file made on a node.
    #[must_use]
    pub fn pending(name: &str) -> String {
        format!("{PENDING_DIR}/{name}")
    }

    /// Key of a run record.
    #[must_use]
    pub fn run(job: &str, name: &str) -> String {
        format!("{RUN_DIR}/{job}/{name}")
    }

    /// Key of a prune plan.
    #[must_use]
    pub fn gc_plan(name: &str) -> String {
        format!("{GC_DIR}/{name}")
    }

    /// Key of a pack: fanned out by its first byte.
    #[must_use]
    pub fn pack(id: &PackId) -> String {
        let h = id.to_hex();
        format!("{PACK_DIR}/{}/{h}", &h[..2])
    }

    /// Key of an index file.
    #[must_use]
    pub fn index(id: &IndexId) -> String {
        format!("{INDEX_DIR}/{}", id.to_hex())
    }

    /// Key of a snapshot manifest.
    #[must_use]
    pub fn snapshot(id: &SnapshotId) -> String {
        snapshot_key(&id.to_hex())
    }

    /// Key of an object named `name` under `snapshots/`.
    #[must_use]
    pub fn snapshot_key(name: &str) -> String {
        format!("{SNAPSHOT_DIR}/{name}")
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Last path segment.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the storage last wrote it, by the storage's clock.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// A repository's storage: one [`Backend`] (possibly wrapped), with the
/// operations the engine uses.
#[derive(Clone)]
pub struct RepoStore {
    backend: Arc<dyn Backend>,
    /// Object Lock requests, for an S3 repository.
    lock: Option<Arc<objectlock::S3ObjectLock>>,
}

impl std::fmt::Debug for RepoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoStore")
            .field("location", &self.location())
            .finish()
    }
}

fn invalid(location: &str, reason: impl Into<String>) -> Error {
    Error::InvalidLocation {
        location: location.to_string(),
        reason: reason.into(),
    }
}

impl RepoStore {
    /// Opens a location. For local paths `create` makes the directory;
    /// otherwise a missing directory is an error.
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] for unknown schemes, unusable URLs or a
    /// missing local directory.
    pub fn open(location: &str, create: bool) -> Result<Self> {
        let (scheme, rest) = match location.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("path".to_string(), location),
        };
        let store = match scheme.as_str() {
            "path" | "file" => Self::open_local(location, rest, create),
            "s3" | "gs" | "az" | "azure" => Self::open_cloud(location, &scheme),
            other => Err(invalid(
                location,
                format!("unknown scheme {other}://; use a path, file://, s3://, gs:// or az://"),
            )),
        }?;
        match crash::CrashPoint::from_env().map_err(|e| invalid(location, e))? {
            Some(point) => {
                Ok(store.map_backend(|b| Arc::new(crash::CrashingBackend::new(b, point))))
            }
            None => Ok(store),
        }
    }

    fn open_local(location: &str, path: &str, create: bool) -> Result<Self> {
        if path.is_empty() {
            return Err(invalid(location, "empty path"));
        }
        let dir = std::path::Path::new(path);
        if create {
            std::fs::create_dir_all(dir)
                .map_err(|e| invalid(location, format!("cannot create directory: {e}")))?;
        } else if !dir.is_dir() {
            return Err(invalid(location, "no such directory"));
        }
        Ok(Self::from_backend(Arc::new(LocalBackend::new(
            dir, location,
        )?)))
    }

    fn open_cloud(location: &str, scheme: &str) -> Result<Self> {
        let url = url::Url::parse(location).map_err(|e| invalid(location, e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(location, "missing bucket or container name"));
        }
        let prefix = Path::from(url.path().trim_matches('/'));
        let bucket_url = format!("{scheme}://{}", url.host_str().unwrap_or_default());
        let mut lock = None;
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(&bucket_url)
                    .with_http_connector(http::FailFastConnector);
                if std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .is_ok_and(|e| e.starts_with("http://"))
                {
                    b = b.with_allow_http(true);
                }
                let s3 = b
                    .clone()
                    .build()
                    .map_err(|e| invalid(location, e.to_string()))?;
                lock = Some(Arc::new(
                    objectlock::S3ObjectLock::new(
                        &b,
                        &s3,
                        url.host_str().unwrap_or_default(),
                        prefix.as_ref(),
                        location,
                    )
                    .map_err(|e| invalid(location, e))?,
                ));
                Arc::new(s3)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&bucket_url)
                    .with_http_connector(http::FailFastConnector)
                    .build()
                    .map_err(|e| invalid(location, e.to_string()))?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&bucket_url)
                    .with_http_connector(http::FailFastConnector)
                    .build()
                    .map_err(|e| invalid(location, e.to_string()))?,
            ),
        };
        Ok(Self {
            backend: Arc::new(ObjectStoreBackend::new(store, prefix, location)),
            lock,
        })
    }

    /// Wraps any object store (tests, embedding).
    #[must_use]
    pub fn from_store(inner: Arc<dyn ObjectStore>, location: &str) -> Self {
        Self::from_backend(Arc::new(ObjectStoreBackend::new(
            inner,
            Path::default(),
            location,
        )))
    }

    /// Uses `backend` (a real one, or wrappers around one).
    #[must_use]
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            lock: None,
        }
    }

    /// The same store with its backend wrapped by `wrap` (what it knows of
    /// the location, such as Object Lock, is kept).
    #[must_use]
    pub fn map_backend(self, wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Self {
        Self {
            backend: wrap(self.backend),
            lock: self.lock,
        }
    }

    /// Object Lock requests, for an S3 repository.
    #[must_use]
    pub fn object_lock(&self) -> Option<&Arc<objectlock::S3ObjectLock>> {
        self.lock.as_ref()
    }

    /// The backend, to wrap it: `RepoStore::from_backend(Arc::new(CountingBackend::new(store.backend())))`.
    #[must_use]
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    /// The location as given (never contains credentials: those come from the environment).
    #[must_use]
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    /// True for a repository in a local directory (written with durable
    /// local writes rather than through an object store).
    #[must_use]
    pub fn is_local(&self) -> bool {
        self.backend.is_local()
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        self.backend.get(key).await
    }

    /// Reads a byte range of an object.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors (including a range past the end).
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.backend.get_range(key, range).await
    }

    /// Reads a byte range of an object into `buf` (emptied first) and returns
    /// it: a local repository reads straight into it, so a caller that reuses
    /// its buffers allocates nothing per read.
    ///
    /// # Errors
    /// As [`RepoStore::get_range`].
    pub async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.backend.get_range_into(key, range, buf).await
    }

    /// Reads a byte range on the calling thread where the backend can (see
    /// [`Backend::get_range_blocking`]); `None` otherwise.
    pub fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        self.backend.get_range_blocking(key, range, buf)
    }

    /// True when the object exists.
    ///
    /// # Errors
    /// Backend errors other than not-found.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.backend.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes an object that must not exist yet.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when it does; backend errors.
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        self.backend.put(key, data, WriteMode::Create).await
    }

    /// Writes an object named by the hash of its bytes. An existing object of
    /// that name already holds the same bytes, so it is left as it is; large
    /// objects go up in parts (a failed multipart upload is aborted).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn put_content_addressed(&self, key: &str, data: Bytes) -> Result<()> {
        self.backend
            .put(key, data, WriteMode::ContentAddressed)
            .await
    }

    /// Writes an object, replacing any previous version (leases and other
    /// small mutable objects; everything else is create-only).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn put_replace(&self, key: &str, data: Bytes) -> Result<()> {
        self.backend.put(key, data, WriteMode::Replace).await
    }

    /// When the storage last wrote `key`, by the storage's clock.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors.
    pub async fn modified(&self, key: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(self.backend.head(key).await?.last_modified)
    }

    /// Deletes an object; a missing object is not an error.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.backend.delete(key).await
    }

    /// Lists the objects under a directory key, recursively, with sizes and
    /// last-modified times.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        self.backend.list(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local =
            RepoStore::open(dir.path().join("l").to_str().expect("utf8"), true).expect("opens");
        contract::check(&*local.backend()).await;
        let memory = ObjectStoreBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            object_store::path::Path::from("repo"),
            "memory://",
        );
        contract::check(&memory).await;
        let local =
            RepoStore::open(dir.path().join("c").to_str().expect("utf8"), true).expect("opens");
        contract::check(&counting::CountingBackend::new(local.backend())).await;
    }

    #[tokio::test]
    async fn a_local_disk_error_is_io_and_not_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = RepoStore::open(dir.path().to_str().expect("utf8"), true).expect("opens");
        s.put_new("config", Bytes::from_static(b"abc"))
            .await
            .expect("put");
        // "config" is a file: reading below it fails with ENOTDIR.
        for r in [
            s.get_range("config/x", 0..1).await.map(|_| ()),
            s.get_range_blocking("config/x", 0..1, Vec::new())
                .expect("local has a blocking path")
                .map(|_| ()),
        ] {
            let e = r.expect_err("not a directory");
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
            assert!(!e.is_retryable(), "{e}");
            assert!(e.to_string().contains("config/x"), "{e}");
        }
    }

    #[tokio::test]
    async fn local_round_trip_and_create_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = dir.path().join("repo");
        assert!(RepoStore::open(loc.to_str().expect("utf8"), false).is_err());
        let s = RepoStore::open(loc.to_str().expect("utf8"), true).expect("opens");
        s.put_new("config", Bytes::from_static(b"abc"))
            .await
            .expect("put");
        assert!(matches!(
            s.put_new("config", Bytes::from_static(b"xyz")).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(&s.get("config").await.expect("get")[..], b"abc");
        assert_eq!(
            &s.get_range("config", 1..3).await.expect("range")[..],
            b"bc"
        );
        s.put_content_addressed(
            "packs/ab/x",
            Bytes::from(vec![5u8; MULTIPART_THRESHOLD + 10]),
        )
        .await
        .expect("multipart");
        assert_eq!(s.list("packs").await.expect("list").len(), 1);
        assert!(matches!(s.get("nope").await, Err(Error::NotFound { .. })));
    }

    /// An object store whose multipart uploads fail their second part and
    /// record whether they were aborted.
    #[derive(Debug)]
    struct FailingParts {
        inner: object_store::memory::InMemory,
        aborted: Arc<std::sync::atomic::AtomicBool>,
    }

    impl std::fmt::Display for FailingParts {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FailingParts")
        }
    }

    #[derive(Debug)]
    struct FailingUpload {
        parts: usize,
        aborted: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl object_store::MultipartUpload for FailingUpload {
        fn put_part(&mut self, _data: object_store::PutPayload) -> object_store::UploadPart {
            self.parts += 1;
            let fail = self.parts == 2;
            Box::pin(async move {
                if fail {
                    Err(object_store::Error::Generic {
                        store: "test",
                        source: "part 2 failed".into(),
                    })
                } else {
                    Ok(())
                }
            })
        }
        async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
            Err(object_store::Error::NotImplemented)
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.aborted
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for FailingParts {
        async fn put_opts(
            &self,
            location: &Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            _location: &Path,
            _opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            Ok(Box::new(FailingUpload {
                parts: 0,
                aborted: Arc::clone(&self.aborted),
            }))
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        async fn delete(&self, location: &Path) -> object_store::Result<()> {
            self.inner.delete(location).await
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.inner.copy(from, to).await
        }
        async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.inner.copy_if_not_exists(from, to).await
        }
    }

    #[tokio::test]
    async fn a_failed_multipart_upload_is_aborted() {
        let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = RepoStore::from_store(
            Arc::new(FailingParts {
                inner: object_store::memory::InMemory::new(),
                aborted: Arc::clone(&aborted),
            }),
            "memory",
        );
        let big = Bytes::from(vec![1u8; MULTIPART_THRESHOLD + 10]);
        let e = store
            .put_content_addressed("packs/ab/x", big)
            .await
            .expect_err("part 2 fails");
        assert!(e.to_string().contains("part 2 failed"), "{e}");
        assert!(aborted.load(std::sync::atomic::Ordering::SeqCst), "aborted");
        assert!(!store.exists("packs/ab/x").await.expect("head"));
    }

    #[tokio::test]
    async fn wrappers_count_and_inject_faults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = RepoStore::open(dir.path().to_str().expect("utf8"), true).expect("opens");
        let counting = counting::CountingBackend::new(local.backend());
        let counts = counting.counts();
        let faulty = faulty::FaultyBackend::new(
            Arc::new(counting),
            faulty::Faults {
                write_lost_reply: 1.0,
                ..faulty::Faults::default()
            },
            7,
        );
        let s = RepoStore::from_backend(Arc::new(faulty));
        // The write lands, but its reply is "lost".
        let e = s
            .put_new("snapshots/a", Bytes::from_static(b"abc"))
            .await
            .expect_err("reply lost");
        assert!(e.is_retryable(), "{e}");
        assert_eq!(&s.get("snapshots/a").await.expect("landed")[..], b"abc");
        let listed = s.list("snapshots").await.expect("list");
        assert_eq!(listed[0].size, 3);
        let c = counts.get();
        assert_eq!(
            (c.puts, c.gets, c.lists, c.bytes_written, c.bytes_read),
            (1, 1, 1, 3, 3)
        );

        // Every read fails at probability 1; deterministic for a seed.
        let failing = faulty::FaultyBackend::new(
            local.backend(),
            faulty::Faults {
                read_error: 1.0,
                ..faulty::Faults::default()
            },
            1,
        );
        let s = RepoStore::from_backend(Arc::new(failing));
        assert!(s.get("snapshots/a").await.is_err());
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let e = RepoStore::open("ftp://host/x", false).expect_err("refused");
        assert!(e.to_string().contains("unknown scheme ftp://"), "{e}");
    }
}
