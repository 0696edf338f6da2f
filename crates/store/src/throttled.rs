//! A wrapper that caps the rate of uploads (`[limits] upload`): every
//! write waits for its bytes' share of the rate before it is sent, so the
//! average over any second or more stays at the cap however many writes
//! run at once. Reads, listings and deletes pass through. Time is tokio's
//! clock, so that tests can run it paused.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{Listed, Result};

/// A token bucket: `rate` bytes a second, with a burst of a tenth of a
/// second (at least 64 KiB). A transfer larger than the bucket takes it
/// into debt, which the next transfers wait out. Shared by uploads (here)
/// and reads from Qdrant nodes (the cluster crate's download limit).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens left (negative: debt) and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `bytes_per_sec`.
    #[must_use]
    pub fn new(bytes_per_sec: u64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(64.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// The rate, in bytes a second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Accounts for `n` bytes; returns how long to wait before moving them.
    pub fn take(&self, n: usize) -> Duration {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        #[allow(clippy::cast_precision_loss)]
        let after = (s.0 + refill).min(self.burst) - n as f64;
        *s = (after, now);
        if after < 0.0 {
            Duration::from_secs_f64(-after / self.rate)
        } else {
            Duration::ZERO
        }
    }
}

/// A backend whose writes are held to a rate.
#[derive(Debug, Clone)]
pub struct ThrottledBackend {
    inner: Arc<dyn Backend>,
    bucket: Arc<TokenBucket>,
}

impl ThrottledBackend {
    /// Wraps `inner`; its writes go out at most `bytes_per_sec` on average.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, bytes_per_sec: u64) -> Self {
        Self {
            inner,
            bucket: Arc::new(TokenBucket::new(bytes_per_sec)),
        }
    }
}

#[async_trait]
impl Backend for ThrottledBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        self.inner.get_range_into(key, range, buf).await
    }

    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        self.inner.get_range_blocking(key, range, buf)
    }

    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        let wait = self.bucket.take(data.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RepoStore;

    /// Four writers of 8 × 64 KiB each through a 2 MiB/s cap cannot finish
    /// before (2 MiB − the first burst) / 2 MiB/s: a lower bound that holds
    /// on any machine, however busy (the test asserts no upper bound). The
    /// objects arrive whole, and reads are not held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_held_to_the_rate() {
        let mem = RepoStore::from_store(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://throttle",
        );
        let rate = 2u64 << 20;
        let throttled = Arc::new(ThrottledBackend::new(mem.backend(), rate));
        let store = RepoStore::from_backend(throttled.clone());
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..8 {
                    s.put_replace(&format!("w{w}/o{i}"), Bytes::from(vec![7u8; 64 << 10]))
                        .await
                        .expect("put");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let took = start.elapsed().as_secs_f64();
        let total = 32.0 * f64::from(64u32 << 10);
        #[allow(clippy::cast_precision_loss)]
        let expected = (total - (rate as f64 / 10.0)) / rate as f64;
        assert!(
            took >= expected * 0.999,
            "2 MiB at 2 MiB/s took {took:.3} s, less than the {expected:.3} s the cap allows"
        );
        for w in 0..4 {
            for i in 0..8 {
                assert_eq!(
                    mem.get(&format!("w{w}/o{i}")).await.expect("get").len(),
                    64 << 10
                );
            }
        }
        // Reads are not held: the bucket is in debt after the writes above
        // were timed, yet reads never touch it.
        let before = *throttled.bucket.state.lock().expect("lock");
        for _ in 0..10 {
            store.get("w0/o0").await.expect("get");
        }
        let after = *throttled.bucket.state.lock().expect("lock");
        assert_eq!(before, after, "a read took tokens");
    }
}
