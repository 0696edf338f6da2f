//! Progress reporting. The engine reports; the CLI decides how to show it.

/// Receives progress from long operations. Calls come from worker threads.
pub trait Progress: Send + Sync {
    /// A phase begins; `total` is in bytes when known.
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    /// `bytes` more were processed in the current phase.
    fn advance(&self, _bytes: u64) {}
    /// The current phase ended.
    fn finish(&self) {}
    /// A line worth showing an operator (a shard done, a step of a restore).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
