//! The storage trait every repository access goes through, and its two real
//! implementations: a local directory and any `object_store` store.
//! Wrappers ([`crate::counting`], [`crate::faulty`]) implement the same trait
//! around another backend, so they compose.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::{durable, Error, Listed, Result};

/// How a write treats an object that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with [`Error::AlreadyExists`].
    Create,
    /// The name is the hash of the content: an existing object already holds
    /// these bytes and is left alone.
    ContentAddressed,
    /// Replace it (leases and other small mutable objects).
    Replace,
}

/// What `head` returns.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// When the storage last wrote it, by the storage's clock.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// Repository storage. Keys are `/`-separated and relative to the
/// repository root.
///
/// # Contract
/// - `put` with [`WriteMode::Create`] never replaces an object; a write is
///   visible whole or not at all (no partial objects under final names).
/// - `list` returns only complete objects, with sizes and last-modified
///   times; `delete` of a missing object succeeds.
/// - A ranged read returns exactly the bytes asked for: a range that ends
///   past the end of the object is [`Error::OutOfRange`] (never a short
///   read); an empty range is empty without a request.
/// - Errors name the location and key; [`Error::NotFound`],
///   [`Error::AlreadyExists`] and [`Error::OutOfRange`] are distinct from
///   other failures; a local disk's failure is [`Error::Io`], which is not
///   retried.
///
/// [`crate::contract`] (feature `test-util`) checks an implementation against
/// this contract.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The location as given (never contains credentials).
    fn location(&self) -> &str;
    /// True for a local directory.
    fn is_local(&self) -> bool {
        false
    }
    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Reads a byte range.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Reads a byte range into `buf` (emptied first).
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        buf.clear();
        buf.extend_from_slice(&self.get_range(key, range).await?);
        Ok(buf)
    }
    /// Reads a byte range into `buf` on the calling thread (its contents are
    /// replaced; a buffer already as long as the range is not zeroed first),
    /// for backends where that is cheaper than a task (a local directory:
    /// the caller is already on a blocking thread and decodes there next).
    /// `None` when the backend has no such path; the caller then uses
    /// [`Backend::get_range_into`].
    fn get_range_blocking(
        &self,
        _key: &str,
        _range: Range<u64>,
        _buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        None
    }
    /// Writes an object.
    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()>;
    /// Size and last-modified time.
    async fn head(&self, key: &str) -> Result<ObjectInfo>;
    /// Deletes an object; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Lists the objects under a directory key, recursively.
    async fn list(&self, dir: &str) -> Result<Vec<Listed>>;
}

/// Objects at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Any `object_store` store (S3, GCS, Azure, in-memory) under a key prefix.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreBackend {
    /// Wraps `inner`; keys go under `prefix`.
    #[must_use]
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: Path, location: &str) -> Self {
        Self {
            inner,
            prefix,
            location: location.to_string(),
        }
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
            object_store::Error::NotFound { ref source, .. }
                if names_missing_bucket(source.as_ref()) =>
            {
                Error::InvalidLocation {
                    location: self.location.clone(),
                    reason: "the bucket (or container) does not exist".to_string(),
                }
            }
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

    /// Uploads in parts; any failure aborts the upload, so that no
    /// incomplete upload is left to be billed.
    async fn put_multipart(&self, key: &str, data: Bytes) -> Result<()> {
        let mut upload = self
            .inner
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| self.map_err(key, e))?;
        let parts: Vec<_> = (0..data.len())
            .step_by(PART_SIZE)
            .map(|at| {
                upload.put_part(PutPayload::from(
                    data.slice(at..(at + PART_SIZE).min(data.len())),
                ))
            })
            .collect();
        let sent = futures::future::try_join_all(parts).await;
        let done = match sent {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key, error = %abort, "could not abort a failed multipart upload");
            }
            return Err(self.map_err(key, e));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| self.map_err(key, e))?;
        r.bytes().await.map_err(|e| self.map_err(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let path = self.path(key);
        match self.inner.get_range(&path, range.clone()).await {
            Ok(b) if b.len() as u64 == range.end - range.start => Ok(b),
            Ok(b) => Err(out_of_range(&self.location, key, &range, b.len() as u64)),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.map_err(key, e)),
            Err(e) => {
                // A range that starts past the end is refused by the store
                // (HTTP 416) with a generic error: say what it was.
                if let Ok(meta) = self.inner.head(&path).await {
                    if meta.size < range.end {
                        let got = meta.size.saturating_sub(range.start);
                        return Err(out_of_range(&self.location, key, &range, got));
                    }
                }
                Err(self.map_err(key, e))
            }
        }
    }

    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        let create = |data: Bytes| async {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.inner
                .put_opts(&self.path(key), PutPayload::from(data), opts)
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(key, e))
        };
        match mode {
            WriteMode::Create => create(data).await,
            WriteMode::Replace => self
                .inner
                .put(&self.path(key), PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(key, e)),
            WriteMode::ContentAddressed if data.len() < MULTIPART_THRESHOLD => {
                match create(data).await {
                    Err(Error::AlreadyExists { .. }) => Ok(()),
                    other => other,
                }
            }
            WriteMode::ContentAddressed => self.put_multipart(key, data).await,
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.inner
            .head(&self.path(key))
            .await
            .map(|m| ObjectInfo {
                size: m.size,
                last_modified: m.last_modified,
            })
            .map_err(|e| self.map_err(key, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
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
                // Local writes stage under hidden names (see LocalBackend).
                (!name.starts_with('.') && !name.contains('#')).then_some(Listed {
                    name,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect())
    }
}

/// True when a "not found" answer is about the bucket, not the object
/// (S3 `NoSuchBucket`, Azure `ContainerNotFound`, GCS "bucket does not
/// exist"): reported as a wrong location, not as a missing repository file.
fn names_missing_bucket(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> =
        Some(source as &(dyn std::error::Error + 'static));
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("NoSuchBucket")
            || text.contains("ContainerNotFound")
            || text.contains("bucket does not exist")
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn out_of_range(location: &str, key: &str, range: &Range<u64>, got: u64) -> Error {
    Error::OutOfRange {
        location: location.to_string(),
        key: key.to_string(),
        start: range.start,
        end: range.end,
        got,
    }
}

/// Reads `range` of the file at `path` with positional reads into `buf`
/// (resized to the range: what it already held is overwritten, not zeroed).
/// A range past the end yields the bytes that exist (the caller checks).
fn pread_range(path: &FsPath, range: Range<u64>, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX);
    buf.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        match f.read_at(&mut buf[filled..], range.start + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A repository in a local directory. Reads and deletes go through
/// object_store's local file system; listings walk the directory; writes
/// are durable (see the crate docs) and ranged reads go straight into the
/// caller's buffer.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    fs: ObjectStoreBackend,
    root: PathBuf,
}

impl LocalBackend {
    /// A backend for the directory `root` (which must exist).
    ///
    /// # Errors
    /// When object_store cannot use the directory.
    pub fn new(root: &FsPath, location: &str) -> Result<Self> {
        let fs = object_store::local::LocalFileSystem::new_with_prefix(root).map_err(|e| {
            Error::InvalidLocation {
                location: location.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            fs: ObjectStoreBackend::new(Arc::new(fs), Path::default(), location),
            root: root.to_path_buf(),
        })
    }

    fn file(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    /// Maps a local I/O error to the error an object store would give.
    fn io_err(&self, key: &str, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                location: self.fs.location.clone(),
                key: key.to_string(),
            },
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                location: self.fs.location.clone(),
                key: key.to_string(),
            },
            _ => Error::Io {
                location: self.fs.location.clone(),
                key: key.to_string(),
                source: e,
            },
        }
    }

    /// The blocking read every ranged read of a local file goes through.
    fn read(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let want = range.end.saturating_sub(range.start);
        let got =
            pread_range(&self.file(key), range.clone(), buf).map_err(|e| self.io_err(key, e))?;
        if got.len() as u64 == want {
            Ok(got)
        } else {
            Err(out_of_range(
                &self.fs.location,
                key,
                &range,
                got.len() as u64,
            ))
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> &str {
        self.fs.location()
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.fs.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.get_range_into(key, range, Vec::new())
            .await
            .map(Bytes::from)
    }

    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        let this = self.clone();
        let key_owned = key.to_string();
        tokio::task::spawn_blocking(move || this.read(&key_owned, range, buf))
            .await
            .expect("invariant: local read does not panic")
    }

    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        Some(self.read(key, range, buf))
    }

    /// Written under a temporary name (which listings skip), flushed, then
    /// linked (create-only) or renamed into place, and the directory flushed.
    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        static TEMP: AtomicU64 = AtomicU64::new(0);
        let dest = self.file(key);
        let temp_id = format!(
            "{}{}",
            std::process::id(),
            TEMP.fetch_add(1, Ordering::Relaxed)
        );
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = dest.parent().expect("invariant: keys have a parent");
            std::fs::create_dir_all(dir)?;
            if mode == WriteMode::ContentAddressed && dest.exists() {
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
                if mode == WriteMode::Create {
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
        result.map_err(|e| self.io_err(key, e))
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.fs.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.fs.delete(key).await
    }

    /// A walk of the directory with `read_dir` on a blocking thread (the
    /// same listing as `object_store`'s local store, several times faster
    /// on directories of many thousands of files).
    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let root = self.file(dir);
        let this = self.clone();
        let key = dir.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root];
            while let Some(d) = stack.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(this.io_err(&key, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| this.io_err(&key, e))?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    // Local writes stage under hidden names.
                    if name.starts_with('.') || name.contains('#') {
                        continue;
                    }
                    let meta = match entry.metadata() {
                        Ok(m) => m,
                        // Removed between the listing and the stat.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(this.io_err(&key, e)),
                    };
                    if meta.is_dir() {
                        stack.push(entry.path());
                    } else if meta.is_file() {
                        out.push(Listed {
                            name: name.to_string(),
                            size: meta.len(),
                            last_modified: meta
                                .modified()
                                .map(chrono::DateTime::<chrono::Utc>::from)
                                .map_err(|e| this.io_err(&key, e))?,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Io {
            location: self.fs.location.clone(),
            key: dir.to_string(),
            source: std::io::Error::other(e),
        })?
    }
}
