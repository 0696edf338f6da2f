//! Crash points: the process kills itself (SIGKILL) right after a chosen
//! write or delete has landed, so a test can stop a command at an exact
//! step instead of at a moment it hopes falls mid-way.
//!
//! `CAIRN_CRASH_AFTER=OP[:PREFIX]:N` arms it, where `OP` is `put`, `delete`,
//! `any` (either) or `get` (a whole or ranged read that returned), `PREFIX` limits the count to keys that start with it
//! (`packs/`, `index/`, `snapshots/`…), and `N` (from 1) is which matching
//! request it is. A command that makes fewer such requests finishes
//! normally. Meant for crash tests; unset, nothing is wrapped.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, ObjectInfo, WriteMode};
use crate::{Listed, Result};

/// The environment variable that arms a crash point.
pub const ENV: &str = "CAIRN_CRASH_AFTER";

/// Which requests a crash point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Writes.
    Put,
    /// Deletes.
    Delete,
    /// Writes and deletes.
    Any,
    /// Reads (whole or ranged) that returned data.
    Get,
}

/// A parsed `CAIRN_CRASH_AFTER` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    /// Which requests count.
    pub op: Op,
    /// Only keys that start with this count.
    pub prefix: String,
    /// The process dies after this many matching requests have landed.
    pub after: u64,
}

impl CrashPoint {
    /// Parses `OP[:PREFIX]:N`.
    ///
    /// # Errors
    /// A message naming what is wrong with the value.
    pub fn parse(v: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = v.split(':').collect();
        let (op, prefix, n) = match parts.as_slice() {
            [op, n] => (*op, "", *n),
            [op, prefix, n] => (*op, *prefix, *n),
            _ => return Err(format!("{ENV}={v}: expected OP[:PREFIX]:N")),
        };
        let op = match op {
            "put" => Op::Put,
            "delete" => Op::Delete,
            "any" => Op::Any,
            "get" => Op::Get,
            other => {
                return Err(format!(
                    "{ENV}: unknown operation {other} (put, delete, any or get)"
                ))
            }
        };
        let after = n
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{ENV}: {n} is not a count from 1"))?;
        Ok(Self {
            op,
            prefix: prefix.to_string(),
            after,
        })
    }

    /// The crash point the environment arms, if any.
    ///
    /// # Errors
    /// A malformed value (so a typo does not silently disarm a test).
    pub fn from_env() -> std::result::Result<Option<Self>, String> {
        match std::env::var(ENV) {
            Ok(v) if !v.is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }
}

/// Kills the process after the [`CrashPoint`]'s request has landed.
#[derive(Debug)]
pub struct CrashingBackend {
    inner: Arc<dyn Backend>,
    point: CrashPoint,
    seen: AtomicU64,
}

impl CrashingBackend {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, point: CrashPoint) -> Self {
        Self {
            inner,
            point,
            seen: AtomicU64::new(0),
        }
    }

    fn landed(&self, op: Op, key: &str) {
        if (self.point.op == op || (self.point.op == Op::Any && op != Op::Get))
            && key.starts_with(&self.point.prefix)
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.point.after
        {
            // SAFETY: kill(2) with our own pid and SIGKILL touches no memory;
            // it does not return.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Backend for CrashingBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        let got = self.inner.get(key).await?;
        self.landed(Op::Get, key);
        Ok(got)
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let got = self.inner.get_range(key, range).await?;
        self.landed(Op::Get, key);
        Ok(got)
    }
    async fn get_range_into(&self, key: &str, range: Range<u64>, buf: Vec<u8>) -> Result<Vec<u8>> {
        let got = self.inner.get_range_into(key, range, buf).await?;
        self.landed(Op::Get, key);
        Ok(got)
    }
    fn get_range_blocking(
        &self,
        key: &str,
        range: Range<u64>,
        buf: Vec<u8>,
    ) -> Option<Result<Vec<u8>>> {
        let got = self.inner.get_range_blocking(key, range, buf);
        if matches!(got, Some(Ok(_))) {
            self.landed(Op::Get, key);
        }
        got
    }
    async fn put(&self, key: &str, data: Bytes, mode: WriteMode) -> Result<()> {
        self.inner.put(key, data, mode).await?;
        self.landed(Op::Put, key);
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await?;
        self.landed(Op::Delete, key);
        Ok(())
    }
    async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        self.inner.list(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_are_named() {
        assert_eq!(
            CrashPoint::parse("delete:packs/:3").unwrap(),
            CrashPoint {
                op: Op::Delete,
                prefix: "packs/".into(),
                after: 3
            }
        );
        assert_eq!(CrashPoint::parse("any:1").unwrap().op, Op::Any);
        assert_eq!(CrashPoint::parse("get:packs/:2").unwrap().op, Op::Get);
        assert!(CrashPoint::parse("put:0").unwrap_err().contains("from 1"));
        assert!(CrashPoint::parse("read:1").unwrap_err().contains("read"));
        assert!(CrashPoint::parse("put").is_err());
    }
}
