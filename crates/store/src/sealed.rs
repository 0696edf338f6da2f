//! Whole-object encryption for an encrypted repository: index files,
//! snapshot manifests, prune plans and run records are sealed on write and
//! opened on read, each bound to its directory. Packs seal their own blobs
//! (they are read in ranges); `config`, `keys/` and `locks/` stay as they
//! are (see docs/format.md, Encryption).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_crypto::{Keys, Kind};

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{keys, Error, Listed, Result};

/// The directories whose objects are sealed whole.
pub const SEALED_DIRS: [&str; 6] = [
    keys::INDEX_DIR,
    keys::SNAPSHOT_DIR,
    keys::GC_DIR,
    keys::RUN_DIR,
    keys::PENDING_DIR,
    keys::DRILL_DIR,
];

fn sealed_dir(key: &str) -> Option<&'static str> {
    let dir = key.split('/').next()?;
    SEALED_DIRS.into_iter().find(|d| *d == dir)
}

/// Seals and opens the objects of [`SEALED_DIRS`] around another backend.
#[derive(Debug)]
pub struct SealedBackend {
    inner: Arc<dyn Backend>,
    keys: Arc<Keys>,
}

impl SealedBackend {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, keys: Arc<Keys>) -> Self {
        Self { inner, keys }
    }

    fn open(&self, key: &str, dir: &'static str, sealed: &[u8]) -> Result<Bytes> {
        self.keys
            .open(sealed, Kind::Object(dir))
            .map(Bytes::from)
            .map_err(|e| match e {
                cairn_crypto::Error::WriteOnly => Error::WriteOnly {
                    location: self.inner.location().to_string(),
                    key: key.to_string(),
                },
                e => Error::Undecryptable {
                    location: self.inner.location().to_string(),
                    key: key.to_string(),
                    reason: e.to_string(),
                },
            })
    }
}

#[async_trait]
impl Backend for SealedBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        let got = self.inner.get(key).await?;
        match sealed_dir(key) {
            Some(dir) => self.open(key, dir, &got),
            None => Ok(got),
        }
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        match sealed_dir(key) {
            // Whole-object seals cannot be read in part: open, then cut.
            Some(_) => {
                let all = self.get(key).await?;
                let (s, e) = (range.start as usize, range.end as usize);
                if e > all.len() || s > e {
                    return Err(Error::OutOfRange {
                        location: self.location().to_string(),
                        key: key.to_string(),
                        got: all.len().saturating_sub(s) as u64,
                        start: range.start,
                        end: range.end,
                    });
                }
                Ok(all.slice(s..e))
            }
            None => self.inner.get_range(key, range).await,
        }
    }
    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        match sealed_dir(key) {
            Some(_) => {
                let mut buf = buf;
                buf.clear();
                buf.extend_from_slice(&self.get_range(key, range).await?);
                Ok(buf)
            }
            None => self.inner.get_range_into(key, range, buf).await,
        }
    }
    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        match sealed_dir(key) {
            Some(_) => None,
            None => self.inner.get_range_blocking(key, range, buf),
        }
    }
    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        let data = match sealed_dir(key) {
            Some(dir) => Bytes::from(self.keys.seal(&data, Kind::Object(dir))),
            None => data,
        };
        self.inner.put(key, data, mode).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        self.inner.list(dir).await
    }
}
