//! Repository storage over `object_store`: where each kind of file lives and
//! how it is written.
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

pub mod durable;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

/// Objects at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

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
        matches!(
            self,
            Self::Backend {
                source: object_store::Error::Generic { .. },
                ..
            }
        )
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of file in a repository and their key prefixes.
pub mod keys {
    use cairn_model::{PackId, SnapshotId};

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

    /// Key of a lease.
    #[must_use]
    pub fn lock(name: &str) -> String {
        format!("{LOCK_DIR}/{name}")
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
    pub fn index(name: &str) -> String {
        format!("{INDEX_DIR}/{name}")
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

/// A repository's object store plus its key prefix.
#[derive(Clone)]
pub struct RepoStore {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    /// The directory of a local repository (written without object_store).
    local: Option<PathBuf>,
}

impl std::fmt::Debug for RepoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoStore")
            .field("location", &self.location)
            .finish()
    }
}

fn invalid(location: &str, reason: impl Into<String>) -> Error {
    Error::InvalidLocation {
        location: location.to_string(),
        reason: reason.into(),
    }
}

/// Where `key` lives under a local repository's `root`.
fn local_path(root: &std::path::Path, key: &str) -> PathBuf {
    key.split('/')
        .fold(root.to_path_buf(), |p, part| p.join(part))
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
        match scheme.as_str() {
            "path" | "file" => Self::open_local(location, rest, create),
            "s3" | "gs" | "az" | "azure" => Self::open_cloud(location, &scheme),
            other => Err(invalid(
                location,
                format!("unknown scheme {other}://; use a path, file://, s3://, gs:// or az://"),
            )),
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
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| invalid(location, e.to_string()))?;
        Ok(Self {
            inner: Arc::new(fs),
            prefix: Path::default(),
            location: location.to_string(),
            local: Some(dir.to_path_buf()),
        })
    }

    fn open_cloud(location: &str, scheme: &str) -> Result<Self> {
        let url = url::Url::parse(location).map_err(|e| invalid(location, e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(location, "missing bucket or container name"));
        }
        let prefix = Path::from(url.path().trim_matches('/'));
        let bucket_url = format!("{scheme}://{}", url.host_str().unwrap_or_default());
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(&bucket_url);
                if std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .is_ok_and(|e| e.starts_with("http://"))
                {
                    b = b.with_allow_http(true);
                }
                Arc::new(b.build().map_err(|e| invalid(location, e.to_string()))?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&bucket_url)
                    .build()
                    .map_err(|e| invalid(location, e.to_string()))?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&bucket_url)
                    .build()
                    .map_err(|e| invalid(location, e.to_string()))?,
            ),
        };
        Ok(Self {
            inner: store,
            prefix,
            location: location.to_string(),
            local: None,
        })
    }

    /// Wraps any object store (tests, embedding).
    #[must_use]
    pub fn from_store(inner: Arc<dyn ObjectStore>, location: &str) -> Self {
        Self {
            inner,
            prefix: Path::default(),
            location: location.to_string(),
            local: None,
        }
    }

    /// The location as given (never contains credentials: those come from the environment).
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// True for a repository in a local directory (written with durable
    /// local writes rather than through an object store).
    #[must_use]
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn path(&self, key: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in key.split('/') {
            p = p.child(part);
        }
        p
    }

    fn map_err(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                location: self.location.clone(),
                key: key.to_string(),
            },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                location: self.location.clone(),
                key: key.to_string(),
            },
            source => Error::Backend {
                location: self.location.clone(),
                key: key.to_string(),
                source,
            },
        }
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| self.map_err(key, e))?;
        r.bytes().await.map_err(|e| self.map_err(key, e))
    }

    /// Reads a byte range of an object.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors (including a range past the end).
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner
            .get_range(&self.path(key), range)
            .await
            .map_err(|e| self.map_err(key, e))
    }

    /// Reads a byte range of an object into `buf` (emptied first) and returns
    /// it: a local repository reads straight into it, so a caller that reuses
    /// its buffers allocates nothing per read. A range past the end of a local
    /// object yields the bytes that exist.
    ///
    /// # Errors
    /// As [`RepoStore::get_range`].
    pub async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        buf.clear();
        let Some(root) = &self.local else {
            let bytes = self.get_range(key, range).await?;
            buf.extend_from_slice(&bytes);
            return Ok(buf);
        };
        let path = local_path(root, key);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek};
            let mut f = std::fs::File::open(&path)?;
            f.seek(std::io::SeekFrom::Start(range.start))?;
            let len = range.end.saturating_sub(range.start);
            buf.reserve(usize::try_from(len).unwrap_or(usize::MAX));
            f.take(len).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .expect("invariant: local read does not panic");
        read.map_err(|e| self.local_err(key, e))
    }

    /// Maps a local I/O error to the error an object store would give.
    fn local_err(&self, key: &str, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                location: self.location.clone(),
                key: key.to_string(),
            },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                location: self.location.clone(),
                key: key.to_string(),
            },
            _ => self.map_err(
                key,
                object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                },
            ),
        }
    }

    /// True when the object exists.
    ///
    /// # Errors
    /// Backend errors other than not-found.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    /// Writes an object that must not exist yet.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when it does; backend errors.
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        if let Some(root) = &self.local {
            return self.put_local(root, key, data, true, false).await;
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.inner
            .put_opts(&self.path(key), PutPayload::from(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(key, e))
    }

    /// Writes an object named by the hash of its bytes. An existing object of
    /// that name already holds the same bytes, so it is left as it is; large
    /// objects go up in parts.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn put_content_addressed(&self, key: &str, data: Bytes) -> Result<()> {
        if let Some(root) = &self.local {
            return self.put_local(root, key, data, false, false).await;
        }
        if data.len() < MULTIPART_THRESHOLD {
            return match self.put_new(key, data).await {
                Err(Error::AlreadyExists { .. }) => Ok(()),
                other => other,
            };
        }
        let path = self.path(key);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.map_err(key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        w.put(data);
        w.finish()
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(key, e))
    }

    /// Writes `key` under a local repository's `root` durably (see the module
    /// docs): create-only, replacing (`replace`), or replacing nothing when
    /// the content-addressed object is already there.
    async fn put_local(
        &self,
        root: &std::path::Path,
        key: &str,
        data: Bytes,
        create_only: bool,
        replace: bool,
    ) -> Result<()> {
        static TEMP: AtomicU64 = AtomicU64::new(0);
        let dest = key
            .split('/')
            .fold(root.to_path_buf(), |p, part| p.join(part));
        let temp_id = format!(
            "{}{}",
            std::process::id(),
            TEMP.fetch_add(1, Ordering::Relaxed)
        );
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = dest.parent().expect("invariant: keys have a parent");
            std::fs::create_dir_all(dir)?;
            if !create_only && !replace && dest.exists() {
                return Ok(());
            }
            // object_store's listing skips names ending in '#' and digits.
            let mut name = dest
                .file_name()
                .expect("invariant: keys name a file")
                .to_os_string();
            name.push(format!("#{temp_id}"));
            let temp = dir.join(name);
            let written = (|| {
                let mut f = durable::DurableFile::create(&temp, true, Some(data.len() as u64))?;
                f.write_all(&data)?;
                f.finish()?;
                if create_only {
                    std::fs::hard_link(&temp, &dest)
                } else {
                    std::fs::rename(&temp, &dest)
                }
            })();
            let _ = std::fs::remove_file(&temp);
            written?;
            durable::sync_dir(dir)
        })
        .await
        .expect("invariant: local write does not panic");
        result.map_err(|e| self.local_err(key, e))
    }

    /// Writes an object, replacing any previous version (leases and other
    /// small mutable objects; everything else is create-only).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn put_replace(&self, key: &str, data: Bytes) -> Result<()> {
        if let Some(root) = &self.local {
            return self.put_local(root, key, data, false, true).await;
        }
        self.inner
            .put(&self.path(key), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(key, e))
    }

    /// When the storage last wrote `key`, by the storage's clock.
    ///
    /// # Errors
    /// [`Error::NotFound`] or backend errors.
    pub async fn modified(&self, key: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        self.inner
            .head(&self.path(key))
            .await
            .map(|m| m.last_modified)
            .map_err(|e| self.map_err(key, e))
    }

    /// Deletes an object; a missing object is not an error.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    /// Lists the objects under a directory key, recursively.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let prefix = self.path(dir);
        let metas: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.map_err(dir, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                // object_store's local backend stages writes under hidden names.
                (!name.starts_with('.') && !name.contains("#")).then_some(Listed {
                    name,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn unknown_scheme_is_refused() {
        let e = RepoStore::open("ftp://host/x", false).expect_err("refused");
        assert!(e.to_string().contains("unknown scheme ftp://"), "{e}");
    }
}
