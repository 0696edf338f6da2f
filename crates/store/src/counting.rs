//! A wrapper that counts requests and bytes by kind: what a command costs on
//! a billed object store.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{Listed, Result};

/// Request and byte counts (cumulative, shared by clones of the wrapper).
#[derive(Debug, Default)]
pub struct RequestCounts {
    gets: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
    heads: AtomicU64,
    deletes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A snapshot of [`RequestCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// GET requests (whole and ranged).
    pub gets: u64,
    /// PUT requests (a multipart upload counts once).
    pub puts: u64,
    /// LIST calls (each may be several pages on a cloud store).
    pub lists: u64,
    /// HEAD requests.
    pub heads: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// Bytes downloaded.
    pub bytes_read: u64,
    /// Bytes uploaded.
    pub bytes_written: u64,
}

impl RequestCounts {
    /// The counts so far.
    #[must_use]
    pub fn get(&self) -> Counts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            gets: l(&self.gets),
            puts: l(&self.puts),
            lists: l(&self.lists),
            heads: l(&self.heads),
            deletes: l(&self.deletes),
            bytes_read: l(&self.bytes_read),
            bytes_written: l(&self.bytes_written),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Counts every request made through it.
#[derive(Debug, Clone)]
pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    counts: Arc<RequestCounts>,
}

impl CountingBackend {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The shared counters.
    #[must_use]
    pub fn counts(&self) -> Arc<RequestCounts> {
        Arc::clone(&self.counts)
    }
}

#[async_trait]
impl Backend for CountingBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        add(&self.counts.gets, 1);
        let b = self.inner.get(key).await?;
        add(&self.counts.bytes_read, b.len() as u64);
        Ok(b)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        add(&self.counts.gets, 1);
        let b = self.inner.get_range(key, range).await?;
        add(&self.counts.bytes_read, b.len() as u64);
        Ok(b)
    }

    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        add(&self.counts.gets, 1);
        let b = self.inner.get_range_into(key, range, buf).await?;
        add(&self.counts.bytes_read, b.len() as u64);
        Ok(b)
    }

    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        let r = self.inner.get_range_blocking(key, range, buf)?;
        add(&self.counts.gets, 1);
        if let Ok(b) = &r {
            add(&self.counts.bytes_read, b.len() as u64);
        }
        Some(r)
    }

    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        add(&self.counts.puts, 1);
        add(&self.counts.bytes_written, data.len() as u64);
        self.inner.put(key, data, mode).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        add(&self.counts.heads, 1);
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        add(&self.counts.deletes, 1);
        self.inner.delete(key).await
    }

    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        add(&self.counts.lists, 1);
        self.inner.list(dir).await
    }
}
