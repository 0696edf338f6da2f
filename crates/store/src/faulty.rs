//! A fault-injecting wrapper for tests: failed requests, timeouts (a delay,
//! then a failure), slow reads, and writes that land but report failure —
//! the ambiguous case every writer must survive. Deterministic for a seed.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng};

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{Error, Listed, Result};

/// Which faults to inject, as probabilities per request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A read, list or head fails.
    pub read_error: f64,
    /// A write fails before it lands.
    pub write_error: f64,
    /// A write lands, then fails (the caller cannot tell it landed).
    pub write_lost_reply: f64,
    /// A delete fails (before it happens).
    pub delete_error: f64,
    /// A request waits `delay`, then fails, as a timeout would.
    pub timeout: f64,
    /// A read is slowed by `delay` (and then succeeds).
    pub slow_read: f64,
    /// The delay of timeouts and slow reads.
    pub delay: Duration,
}

/// Injects [`Faults`] into another backend.
#[derive(Debug, Clone)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    faults: Faults,
    rng: Arc<Mutex<rand_chacha::ChaCha8Rng>>,
}

impl FaultyBackend {
    /// Wraps `inner`; faults are drawn from a generator seeded with `seed`.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, faults: Faults, seed: u64) -> Self {
        Self {
            inner,
            faults,
            rng: Arc::new(Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed))),
        }
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .random::<f64>()
                < p
    }

    fn injected(&self, key: &str, what: &str) -> Error {
        Error::Backend {
            location: self.inner.location().to_string(),
            key: key.to_string(),
            source: object_store::Error::Generic {
                store: "faulty",
                source: format!("injected fault: {what}").into(),
            },
        }
    }

    /// Read-side faults: an error, a timeout, or a slow read.
    async fn before_read(&self, key: &str) -> Result<()> {
        if self.roll(self.faults.timeout) {
            tokio::time::sleep(self.faults.delay).await;
            return Err(self.injected(key, "timeout"));
        }
        if self.roll(self.faults.read_error) {
            return Err(self.injected(key, "read error"));
        }
        if self.roll(self.faults.slow_read) {
            tokio::time::sleep(self.faults.delay).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.before_read(key).await?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.before_read(key).await?;
        self.inner.get_range(key, range).await
    }

    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        self.before_read(key).await?;
        self.inner.get_range_into(key, range, buf).await
    }

    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        if self.roll(self.faults.write_error) {
            return Err(self.injected(key, "write error"));
        }
        let r = self.inner.put(key, data, mode).await;
        if r.is_ok() && self.roll(self.faults.write_lost_reply) {
            return Err(self.injected(key, "write landed, reply lost"));
        }
        r
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.before_read(key).await?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if self.roll(self.faults.delete_error) {
            return Err(self.injected(key, "delete error"));
        }
        self.inner.delete(key).await
    }

    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        self.before_read(dir).await?;
        self.inner.list(dir).await
    }
}
