//! Reading blobs from packs in few, large requests: the read plan every
//! reader of chunk data shares (restore, dump, cluster restore, check
//! `--read-data`, prune's repacking, and report's restore estimate).
//!
//! A reader names the blobs it needs; [`plan`] sorts them by pack and
//! offset, reads each blob once however often it is needed, and merges
//! neighbouring blobs of a pack into one ranged request, bridging gaps of
//! unneeded bytes while they stay small (at most [`ReadLimits::max_gap`]
//! each, and together at most [`ReadLimits::over_read`] of the needed
//! bytes, smallest gaps first) and while a request stays within
//! [`ReadLimits::max_request`]. [`Repository::fetch`] then issues the
//! requests, up to a concurrency fitted to the backend, and decodes and
//! verifies every blob of a request off the runtime (raw blobs in place,
//! small blobs hashed together in SIMD lanes), handing each finished request
//! to the caller as it arrives.

use std::ops::Range;
use std::sync::Arc;

use cairn_model::{ChunkHasher, ChunkId, Codec, PackId, PackLocation};
use cairn_pack::Sealing;
use cairn_store::keys;
use futures::StreamExt;

use crate::error::Error;
use crate::repository::Repository;

/// How large and how wasteful a request may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadLimits {
    /// Largest request, in bytes (a single blob larger than this is still
    /// read whole, alone).
    pub max_request: u64,
    /// Largest run of unneeded bytes a request may include.
    pub max_gap: u64,
    /// Unneeded bytes read in all, as a share of the needed bytes.
    pub over_read: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Bytes of requests in flight (with their buffers, what reading holds
    /// in memory).
    pub budget: u64,
    /// Bytes of a file a restore assembles in memory at once, when it
    /// writes in order (to stdout, to a Qdrant upload): the span over which
    /// its reads are sorted and merged.
    pub window: u64,
    /// Chunks planned together when a restore writes a file in place: the
    /// span over which reads are merged (1 M chunks is about 100 MiB of
    /// plan, 4 GiB of file at 4 KiB chunks).
    pub horizon: usize,
}

impl ReadLimits {
    /// Limits for a local directory. A request costs a system call and a
    /// hand-off, not a round trip, so windows are small (fewer fresh pages
    /// to fault in); bridging gaps still pays, as the disk then reads in
    /// long runs.
    pub const LOCAL: Self = Self {
        max_request: 2 * 1024 * 1024,
        max_gap: 1024 * 1024,
        over_read: 0.25,
        concurrency: 4,
        budget: 32 * 1024 * 1024,
        window: 8 * 1024 * 1024,
        horizon: 16 * 1024,
    };

    /// Limits for object stores, where each request costs a round trip
    /// (10–50 ms on the big clouds) and is billed, as is every byte read.
    pub const OBJECT_STORE: Self = Self {
        max_request: 16 * 1024 * 1024,
        max_gap: 1024 * 1024,
        over_read: 0.10,
        concurrency: 16,
        budget: 64 * 1024 * 1024,
        window: 32 * 1024 * 1024,
        horizon: 1024 * 1024,
    };

    /// The limits for a backend.
    #[must_use]
    pub fn for_store(is_local: bool) -> Self {
        if is_local {
            Self::LOCAL
        } else {
            Self::OBJECT_STORE
        }
    }
}

/// One blob a request returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    /// The chunk (or chunk list) it holds.
    pub id: ChunkId,
    /// Offset of the stored bytes in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u32,
    /// Decoded length.
    pub raw_length: u32,
    /// How it is stored.
    pub codec: Codec,
    /// The caller's own number for it (which of its wants it answers).
    pub tag: u32,
}

impl From<&cairn_model::IndexEntry> for Blob {
    fn from(e: &cairn_model::IndexEntry) -> Self {
        Self {
            id: e.id,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            codec: e.codec,
            tag: 0,
        }
    }
}

impl Blob {
    /// The blob at `loc`.
    #[must_use]
    pub fn at(id: ChunkId, loc: &PackLocation) -> Self {
        Self {
            id,
            offset: loc.offset,
            length: loc.length,
            raw_length: loc.raw_length,
            codec: loc.codec,
            tag: 0,
        }
    }

    /// This blob with the caller's number `tag`.
    #[must_use]
    pub fn tagged(self, tag: u32) -> Self {
        Self { tag, ..self }
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.length)
    }
}

/// One ranged request: a byte range of a pack and the blobs in it, in
/// offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct PackRead {
    /// The pack.
    pub pack: PackId,
    /// The bytes requested.
    pub range: Range<u64>,
    /// The needed blobs inside `range`.
    pub blobs: Vec<Blob>,
}

impl PackRead {
    /// Bytes requested.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// True when nothing is requested.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Stored bytes of the needed blobs.
    #[must_use]
    pub fn needed(&self) -> u64 {
        self.blobs.iter().map(|b| u64::from(b.length)).sum()
    }
}

/// The requests that read a set of blobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadPlan {
    /// The requests, by pack and offset.
    pub reads: Vec<PackRead>,
    /// Stored bytes of the distinct blobs needed.
    pub needed: u64,
    /// Bytes requested (needed plus the bridged gaps).
    pub fetched: u64,
}

impl ReadPlan {
    /// Unneeded bytes requested.
    #[must_use]
    pub fn over_read(&self) -> u64 {
        self.fetched - self.needed
    }

    /// Adds another plan's figures and requests.
    pub fn extend(&mut self, other: ReadPlan) {
        self.reads.extend(other.reads);
        self.needed += other.needed;
        self.fetched += other.fetched;
    }
}

/// Plans the requests that read `blobs` (pack, blob) under `limits`. A blob
/// named more than once is read once.
#[must_use]
pub fn plan(blobs: impl IntoIterator<Item = (PackId, Blob)>, limits: &ReadLimits) -> ReadPlan {
    // Sorted by pack (in pack id order, through a small map to ordinals
    // so that the sort compares integers) and offset.
    let all: Vec<(PackId, Blob)> = blobs.into_iter().collect();
    let mut packs: Vec<PackId> = all
        .iter()
        .map(|(p, _)| *p)
        .collect::<std::collections::HashSet<PackId>>()
        .into_iter()
        .collect();
    packs.sort_unstable();
    let ordinal: std::collections::HashMap<PackId, u32> = packs
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, u32::try_from(i).expect("invariant: < 2^32 packs")))
        .collect();
    let mut keyed: Vec<(u32, u64, usize)> = all
        .iter()
        .enumerate()
        .map(|(i, (p, b))| (ordinal[p], b.offset, i))
        .collect();
    keyed.sort_unstable();
    keyed.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let all: Vec<(PackId, Blob)> = keyed.into_iter().map(|(_, _, i)| all[i]).collect();
    let needed: u64 = all.iter().map(|(_, b)| u64::from(b.length)).sum();

    // Every boundary between two blobs of one pack is a candidate join.
    // Joins without a gap cost nothing; the others are taken smallest
    // first while the over-read budget lasts.
    let mut gaps: Vec<(u64, usize)> = all
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].0 == w[1].0)
        .filter_map(|(i, w)| {
            let gap = w[1].1.offset.saturating_sub(w[0].1.end());
            (gap <= limits.max_gap).then_some((gap, i))
        })
        .collect();
    gaps.sort_unstable();
    let mut budget = (needed as f64 * limits.over_read) as u64;

    // Requests as spans of `all`: `first[i]` is the first blob of the span
    // that ends at blob `i`, `last[i]` the last blob of the span that starts
    // at `i` (valid at span ends and starts only).
    let mut first: Vec<usize> = (0..all.len()).collect();
    let mut last: Vec<usize> = (0..all.len()).collect();
    for (gap, i) in gaps {
        if gap > budget {
            break;
        }
        let (a, b) = (first[i], last[i + 1]);
        if all[b].1.end() - all[a].1.offset > limits.max_request {
            continue;
        }
        budget -= gap;
        first[b] = a;
        last[a] = b;
    }

    let mut reads = Vec::new();
    let mut fetched = 0;
    let mut i = 0;
    while i < all.len() {
        let end = last[i];
        let pack = all[i].0;
        let range = all[i].1.offset..all[end].1.end();
        fetched += range.end - range.start;
        reads.push(PackRead {
            pack,
            range,
            blobs: all[i..=end].iter().map(|(_, b)| *b).collect(),
        });
        i = end + 1;
    }
    ReadPlan {
        reads,
        needed,
        fetched,
    }
}

/// Why one blob of a request could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobFault {
    /// The pack does not exist.
    MissingPack,
    /// The pack ends before the blob does.
    ShortPack,
    /// Reading failed (after the store's retries).
    Unreadable(String),
    /// The blob does not decode to its id.
    Bad(String),
}

impl std::fmt::Display for BlobFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingPack => f.write_str("pack is missing"),
            Self::ShortPack => f.write_str("pack is shorter than its index says"),
            Self::Unreadable(e) | Self::Bad(e) => f.write_str(e),
        }
    }
}

/// A request as read: each blob's decoded bytes, verified against its id,
/// or why it is unusable.
#[derive(Debug)]
pub struct Fetched {
    /// The request.
    pub read: PackRead,
    stored: Stored,
    decoded: Vec<u8>,
    /// Per blob: where its decoded bytes are (`true`: in `decoded`).
    spans: Vec<std::result::Result<(bool, Range<usize>), BlobFault>>,
}

impl Fetched {
    /// The decoded bytes of blob `i` of the request, or why it is unusable.
    ///
    /// # Errors
    /// The blob's fault.
    pub fn blob(&self, i: usize) -> std::result::Result<&[u8], &BlobFault> {
        match &self.spans[i] {
            Ok((true, r)) => Ok(&self.decoded[r.clone()]),
            Ok((false, r)) => Ok(&self.stored[r.clone()]),
            Err(f) => Err(f),
        }
    }

    /// Where blob `i`'s decoded bytes are: in the decoded buffer (`true`)
    /// or in the bytes read, and the range there (see [`Fetched::buffer`]).
    pub(crate) fn span(&self, i: usize) -> Option<(bool, Range<usize>)> {
        self.spans[i].as_ref().ok().cloned()
    }

    /// The decoded buffer (`true`) or the bytes read.
    pub(crate) fn buffer(&self, decoded: bool) -> &[u8] {
        if decoded {
            &self.decoded
        } else {
            &self.stored
        }
    }

    /// The stored (possibly compressed) bytes of blob `i`, when it was read.
    #[must_use]
    pub fn stored(&self, i: usize) -> Option<&[u8]> {
        let b = &self.read.blobs[i];
        let from = usize::try_from(b.offset - self.read.range.start).ok()?;
        self.stored.get(from..from + b.length as usize)
    }

    /// The first unusable blob, with its fault.
    #[must_use]
    pub fn first_fault(&self) -> Option<(&Blob, &BlobFault)> {
        self.read
            .blobs
            .iter()
            .zip(&self.spans)
            .find_map(|(b, s)| s.as_ref().err().map(|f| (b, f)))
    }

    /// The buffers, for reuse.
    #[must_use]
    pub fn into_buffers(self) -> (Vec<u8>, Vec<u8>) {
        let stored = match self.stored {
            Stored::Owned(v) => v,
            Stored::Shared(_) => Vec::new(),
        };
        (stored, self.decoded)
    }

    /// A request none of whose blobs could be used.
    fn failed(read: PackRead, fault: &BlobFault) -> Self {
        let spans = read.blobs.iter().map(|_| Err(fault.clone())).collect();
        Self {
            read,
            stored: Stored::Owned(Vec::new()),
            decoded: Vec::new(),
            spans,
        }
    }
}

/// The bytes a request returned: a buffer of ours (local reads), or the
/// object store client's own (no copy).
#[derive(Debug)]
enum Stored {
    Owned(Vec<u8>),
    Shared(bytes::Bytes),
}

impl From<Vec<u8>> for Stored {
    fn from(v: Vec<u8>) -> Self {
        Self::Owned(v)
    }
}

impl From<bytes::Bytes> for Stored {
    fn from(b: bytes::Bytes) -> Self {
        Self::Shared(b)
    }
}

impl std::ops::Deref for Stored {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(b) => b,
        }
    }
}

/// Decodes and verifies every blob of `read` from `stored` (the bytes of
/// `read.range`): raw blobs stay where they are, compressed ones are
/// decompressed into `decoded`; all are hashed, the small ones together.
fn decode(
    sealing: &Sealing,
    read: PackRead,
    stored: impl Into<Stored>,
    mut decoded: Vec<u8>,
) -> Fetched {
    let stored = stored.into();
    let spans = decode_spans(
        sealing,
        &stored,
        read.range.start,
        &read.blobs,
        &mut decoded,
    );
    Fetched {
        read,
        stored,
        decoded,
        spans,
    }
}

/// Where each blob's decoded bytes are (`true`: in `decoded`, else in
/// `stored`, which holds the pack's bytes from offset `base`), each
/// verified against its id, or why a blob is unusable.
pub(crate) fn decode_spans(
    sealing: &Sealing,
    stored: &[u8],
    base: u64,
    blobs: &[Blob],
    decoded: &mut Vec<u8>,
) -> Vec<std::result::Result<(bool, Range<usize>), BlobFault>> {
    decoded.clear();
    decoded.reserve(
        blobs
            .iter()
            .filter(|b| b.codec != Codec::Raw || sealing.is_sealed())
            .map(|b| b.raw_length as usize)
            .sum(),
    );
    let mut spans = Vec::with_capacity(blobs.len());
    let mut scratch = Vec::new();
    let mut opener = sealing.keys().map(|k| k.blob_opener());
    for b in blobs {
        let Some(blob) = b
            .offset
            .checked_sub(base)
            .and_then(|from| usize::try_from(from).ok())
            .and_then(|from| {
                stored
                    .get(from..from + b.length as usize)
                    .map(|s| (from, s))
            })
        else {
            spans.push(Err(BlobFault::ShortPack));
            continue;
        };
        let (from, blob) = blob;
        if let Some(keys) = opener.as_mut() {
            // A raw blob opens straight into `decoded`; a compressed one
            // into `scratch`, then decompresses into `decoded`.
            let at = decoded.len();
            let opened = match b.codec {
                Codec::Raw => keys
                    .open_into(blob, b.id.as_bytes(), decoded)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        let got = decoded.len() - at;
                        (got == b.raw_length as usize)
                            .then_some(())
                            .ok_or_else(|| format!("{got} bytes, expected {}", b.raw_length))
                    }),
                Codec::Zstd => {
                    scratch.clear();
                    keys.open_into(blob, b.id.as_bytes(), &mut scratch)
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            cairn_pack::decompress_into(&scratch, b.raw_length, decoded)
                                .map_err(|e| e.to_string())
                        })
                }
            };
            if opened.is_err() {
                decoded.truncate(at);
            }
            spans.push(
                opened
                    .map(|()| (true, at..decoded.len()))
                    .map_err(|e| BlobFault::Bad(format!("chunk {}: {e}", b.id))),
            );
            continue;
        }
        spans.push(match b.codec {
            Codec::Raw if b.length == b.raw_length => Ok((false, from..from + blob.len())),
            Codec::Raw => Err(BlobFault::Bad(format!(
                "chunk {}: {} bytes, expected {}",
                b.id, b.length, b.raw_length
            ))),
            Codec::Zstd => {
                let at = decoded.len();
                cairn_pack::decompress_into(blob, b.raw_length, decoded)
                    .map(|()| (true, at..decoded.len()))
                    .map_err(|e| BlobFault::Bad(format!("chunk {}: {e}", b.id)))
            }
        });
    }
    // Verify every decoded blob against its id, small ones in batches.
    let slices: Vec<(usize, &[u8])> = spans
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Ok((true, r)) => Some((i, &decoded[r.clone()])),
            Ok((false, r)) => Some((i, &stored[r.clone()])),
            Err(_) => None,
        })
        .collect();
    let bad: Vec<usize> = slices
        .iter()
        .zip(hash_all(sealing.ids(), slices.iter().map(|(_, s)| *s)))
        .filter(|((i, _), h)| h != blobs[*i].id.as_bytes())
        .map(|((i, _), _)| *i)
        .collect();
    for i in bad {
        spans[i] = Err(BlobFault::Bad(format!(
            "chunk {}: content does not match its id",
            blobs[i].id
        )));
    }
    spans
}

/// The BLAKE3 digest of every input, in order: inputs of up to
/// [`cairn_chunk::batch::BATCH_MAX_LEN`] together, side by side in SIMD
/// lanes, longer ones alone.
fn hash_all<'a>(ids: ChunkHasher, inputs: impl Iterator<Item = &'a [u8]>) -> Vec<[u8; 32]> {
    let inputs: Vec<&[u8]> = inputs.collect();
    let small: Vec<&[u8]> = inputs
        .iter()
        .copied()
        .filter(|i| i.len() <= cairn_chunk::batch::BATCH_MAX_LEN)
        .collect();
    let mut small = cairn_chunk::batch::hash_many_keyed(&small, ids.key()).into_iter();
    inputs
        .iter()
        .map(|i| {
            if i.len() <= cairn_chunk::batch::BATCH_MAX_LEN {
                *small
                    .next()
                    .expect("invariant: one digest per small input")
                    .as_bytes()
            } else {
                *ids.hash(i).as_bytes()
            }
        })
        .collect()
}

/// Reusable buffers: at most `max` idle ones are kept. Idle buffers keep
/// their length, so that taking one back at a length it already had
/// zeroes nothing (zeroing and first-touch page faults of fresh memory cost
/// more than the copies a restore makes).
#[derive(Debug)]
pub(crate) struct Buffers {
    idle: std::sync::Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl Buffers {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            idle: std::sync::Mutex::default(),
            max,
        }
    }

    fn pop(&self) -> Vec<u8> {
        self.idle
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    /// An empty buffer (with whatever capacity it had).
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut buf = self.pop();
        buf.clear();
        buf
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (only
    /// what it grows by is zeroed), for callers that overwrite every byte.
    pub(crate) fn take_len(&self, len: usize) -> Vec<u8> {
        let mut buf = self.pop();
        buf.resize(len, 0);
        buf
    }

    /// Keeps `buf` for reuse, contents and all.
    pub(crate) fn give(&self, buf: Vec<u8>) {
        if let Ok(mut bufs) = self.idle.lock() {
            if bufs.len() < self.max {
                bufs.push(buf);
            }
        }
    }
}

/// `bytes` in KiB, rounded up, as semaphore permits.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// What the reads of one command share: limits, the permits that bound
/// requests in flight across everything it reads at once, and buffers.
#[derive(Debug)]
pub(crate) struct Reader {
    pub(crate) limits: ReadLimits,
    permits: Arc<tokio::sync::Semaphore>,
    /// KiB of requests in flight (see [`ReadLimits::budget`]).
    budget: Arc<tokio::sync::Semaphore>,
    /// Request and decoding buffers.
    pub(crate) buffers: Arc<Buffers>,
    /// Bytes of a file assembled in memory at once (see
    /// [`crate::services::materialize`]).
    pub(crate) window: u64,
    /// Window-sized buffers.
    pub(crate) windows: Arc<Buffers>,
}

impl Repository {
    /// A reader with this repository's limits (and `concurrency` requests
    /// in flight, when given).
    pub(crate) fn reader(&self, concurrency: Option<usize>) -> Reader {
        let mut limits = ReadLimits::for_store(self.store.is_local());
        if let Some(c) = concurrency {
            limits.concurrency = c.max(1);
        }
        Reader {
            limits,
            permits: Arc::new(tokio::sync::Semaphore::new(limits.concurrency)),
            budget: Arc::new(tokio::sync::Semaphore::new(kib(limits.budget) as usize)),
            buffers: Arc::new(Buffers::new(2 * limits.concurrency + 2)),
            window: limits.window,
            windows: Arc::new(Buffers::new(4)),
        }
    }

    /// Issues `reads` (at most the reader's concurrency in flight, counted
    /// across every fetch sharing the reader), decodes each off the runtime
    /// and passes it to `then` there; yields what `then` returns, in the
    /// order the requests finish. A request that fails reaches `then` with
    /// every blob faulted: the caller decides what is fatal.
    pub(crate) fn fetch<'a, T, F>(
        &'a self,
        reads: Vec<PackRead>,
        reader: &'a Reader,
        then: Arc<F>,
    ) -> impl futures::Stream<Item = T> + 'a
    where
        F: Fn(Fetched) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        futures::stream::iter(reads)
            .map(move |read| self.fetch_one(read, reader, Arc::clone(&then)))
            .buffer_unordered(reader.limits.concurrency)
    }

    /// As [`Repository::fetch`], but yields in the order of `reads`.
    pub(crate) fn fetch_ordered<'a, T, F>(
        &'a self,
        reads: Vec<PackRead>,
        reader: &'a Reader,
        then: Arc<F>,
    ) -> impl futures::Stream<Item = T> + 'a
    where
        F: Fn(Fetched) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        futures::stream::iter(reads)
            .map(move |read| self.fetch_one(read, reader, Arc::clone(&then)))
            .buffered(reader.limits.concurrency)
    }

    /// On a local repository, reads, decodes and hands over every request
    /// of `reads` in order on one blocking thread (no hand-off per
    /// request), threading `state` through `then`. Anywhere else (or on a
    /// wrapper without a blocking path) nothing is read and the reads and
    /// state come back, for [`Repository::fetch`].
    pub(crate) async fn fetch_blocking<S, E, F>(
        &self,
        reads: Vec<PackRead>,
        reader: &Reader,
        state: S,
        then: F,
    ) -> Blocking<S, E>
    where
        S: Send + 'static,
        E: Send + 'static,
        F: Fn(&mut S, &Fetched) -> std::result::Result<(), E> + Send + 'static,
    {
        if !self.store.is_local() {
            return Blocking::Unsupported(reads, state);
        }
        let store = self.store.clone();
        let sealing = self.sealing.clone();
        let buffers = Arc::clone(&reader.buffers);
        tokio::task::spawn_blocking(move || {
            let mut state = state;
            let mut reads = reads.into_iter();
            let mut first = true;
            while let Some(read) = reads.next() {
                let key = keys::pack(&read.pack);
                let len = usize::try_from(read.len()).expect("invariant: a request fits in memory");
                let Some(got) =
                    store.get_range_blocking(&key, read.range.clone(), buffers.take_len(len))
                else {
                    debug_assert!(
                        first,
                        "a backend has a blocking path for every read or none"
                    );
                    let mut rest = vec![read];
                    rest.extend(reads);
                    return Blocking::Unsupported(rest, state);
                };
                first = false;
                let f = fetched(&sealing, read, got, buffers.take());
                let r = then(&mut state, &f);
                let (a, b) = f.into_buffers();
                buffers.give(a);
                buffers.give(b);
                if let Err(e) = r {
                    return Blocking::Done(Err(e));
                }
            }
            Blocking::Done(Ok(state))
        })
        .await
        .expect("invariant: decoding does not panic")
    }

    async fn fetch_one<T, F>(&self, read: PackRead, reader: &Reader, then: Arc<F>) -> T
    where
        F: Fn(Fetched) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let key = keys::pack(&read.pack);
        let permit = reader
            .permits
            .acquire()
            .await
            .expect("invariant: the semaphore is never closed");
        // Large requests count against the byte budget too (a request larger
        // than the whole budget takes all of it).
        let bytes = reader
            .budget
            .acquire_many(kib(read.len()).min(kib(reader.limits.budget)))
            .await
            .expect("invariant: the semaphore is never closed");
        let read = if self.store.is_local() {
            // Read, decode and hand over on one blocking thread.
            let store = self.store.clone();
            let sealing = self.sealing.clone();
            let buffers = Arc::clone(&reader.buffers);
            let then = Arc::clone(&then);
            let key = key.clone();
            let done = tokio::task::spawn_blocking(move || {
                let len = usize::try_from(read.len()).expect("invariant: a request fits in memory");
                match store.get_range_blocking(&key, read.range.clone(), buffers.take_len(len)) {
                    Some(got) => Ok(then(fetched(&sealing, read, got, buffers.take()))),
                    None => Err(read),
                }
            })
            .await
            .expect("invariant: decoding does not panic");
            match done {
                Ok(t) => return t,
                Err(read) => read,
            }
        } else {
            read
        };
        let got = self.store.get_range(&key, read.range.clone()).await;
        drop(permit);
        let spare = reader.buffers.take();
        let sealing = self.sealing.clone();
        let done = tokio::task::spawn_blocking(move || then(fetched(&sealing, read, got, spare)))
            .await
            .expect("invariant: decoding does not panic");
        // The request's bytes count until it is decoded and handed over.
        drop(bytes);
        done
    }
}

/// What [`Repository::fetch_blocking`] did.
pub(crate) enum Blocking<S, E> {
    /// Every request was read and handed over (or `then` failed).
    Done(std::result::Result<S, E>),
    /// No blocking path here: nothing was read.
    Unsupported(Vec<PackRead>, S),
}

/// A request as read: decoded, or every blob faulted with why it failed.
fn fetched<B: Into<Stored>>(
    sealing: &Sealing,
    read: PackRead,
    got: cairn_store::Result<B>,
    spare: Vec<u8>,
) -> Fetched {
    match got {
        Ok(stored) => decode(sealing, read, stored, spare),
        Err(cairn_store::Error::NotFound { .. }) => Fetched::failed(read, &BlobFault::MissingPack),
        Err(cairn_store::Error::OutOfRange { .. }) => Fetched::failed(read, &BlobFault::ShortPack),
        Err(e) => Fetched::failed(read, &BlobFault::Unreadable(e.to_string())),
    }
}

/// Chunk lists read so far: each list's ids, or why it cannot be read.
pub(crate) type ChunkLists =
    std::collections::HashMap<ChunkId, std::result::Result<Vec<ChunkId>, String>>;

/// The ids a chunk list's bytes hold; `None` when they end in a partial id.
pub(crate) fn list_ids(raw: &[u8]) -> Option<Vec<ChunkId>> {
    (raw.len() % 32 == 0).then(|| raw.chunks_exact(32).map(ChunkId::from_slice).collect())
}

/// The error a restore reports for a faulted blob.
pub(crate) fn restore_error(snapshot: &str, file: &str, pack: &PackId, fault: &BlobFault) -> Error {
    Error::Corrupt {
        snapshot: snapshot.to_string(),
        file: file.to_string(),
        pack: pack.to_hex(),
        reason: fault.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, offset: u64, length: u32) -> Blob {
        Blob {
            id: ChunkId::of(&[n, offset as u8]),
            offset,
            length,
            raw_length: length,
            codec: Codec::Raw,
            tag: 0,
        }
    }

    fn shape(p: &ReadPlan) -> Vec<(u8, u64, u64, usize)> {
        p.reads
            .iter()
            .map(|r| (r.pack.0[0], r.range.start, r.range.end, r.blobs.len()))
            .collect()
    }

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }

    const NO_GAPS: ReadLimits = ReadLimits {
        max_request: 1 << 30,
        max_gap: 0,
        over_read: 0.0,
        concurrency: 1,
        budget: 1 << 30,
        window: 1 << 30,
        horizon: 1 << 30,
    };

    #[test]
    fn blobs_of_a_pack_are_read_in_offset_order_once() {
        // Named out of order, one twice, across two packs.
        let p = plan(
            [
                (pack(1), blob(1, 26, 5)),
                (pack(2), blob(1, 16, 7)),
                (pack(1), blob(1, 16, 10)),
                (pack(1), blob(1, 26, 5)),
                (pack(1), blob(1, 100, 1)),
            ],
            &NO_GAPS,
        );
        assert_eq!(
            shape(&p),
            vec![(1, 16, 31, 2), (1, 100, 101, 1), (2, 16, 23, 1)]
        );
        assert_eq!((p.needed, p.fetched), (23, 23));
    }

    #[test]
    fn gaps_are_bridged_smallest_first_within_the_budget() {
        // Needed: 4 blobs of 100 bytes; gaps of 10, 50 and 5 bytes.
        let blobs = [
            (pack(1), blob(1, 0, 100)),
            (pack(1), blob(1, 110, 100)),
            (pack(1), blob(1, 260, 100)),
            (pack(1), blob(1, 365, 100)),
        ];
        let limits = |over_read: f64, max_gap: u64| ReadLimits {
            max_request: 1 << 20,
            max_gap,
            over_read,
            ..NO_GAPS
        };
        // Budget 15 bytes: the gaps of 5 and 10 are bridged, not 50.
        let p = plan(blobs, &limits(15.0 / 400.0, 1000));
        assert_eq!(shape(&p), vec![(1, 0, 210, 2), (1, 260, 465, 2)]);
        assert_eq!(p.over_read(), 15);
        // A gap above max_gap is never bridged.
        let p = plan(blobs, &limits(1.0, 20));
        assert_eq!(p.reads.len(), 2);
        let p = plan(blobs, &limits(1.0, 50));
        assert_eq!(shape(&p), vec![(1, 0, 465, 4)]);
        assert_eq!(p.over_read(), 65);
    }

    #[test]
    fn requests_stay_within_the_size_limit() {
        let blobs: Vec<_> = (0..10).map(|i| (pack(3), blob(3, i * 100, 100))).collect();
        let p = plan(
            blobs,
            &ReadLimits {
                max_request: 350,
                ..NO_GAPS
            },
        );
        assert!(p.reads.iter().all(|r| r.len() <= 350), "{:?}", shape(&p));
        assert_eq!(p.reads.iter().map(|r| r.blobs.len()).sum::<usize>(), 10);
        assert!(p.reads.len() <= 4, "{:?}", shape(&p));
        // A blob larger than the limit is read alone.
        let p = plan(
            [(pack(3), blob(3, 0, 1000))],
            &ReadLimits {
                max_request: 10,
                ..NO_GAPS
            },
        );
        assert_eq!(shape(&p), vec![(3, 0, 1000, 1)]);
    }

    #[test]
    fn blobs_of_different_packs_are_never_joined() {
        let p = plan(
            [(pack(1), blob(1, 0, 10)), (pack(2), blob(2, 10, 10))],
            &ReadLimits {
                max_gap: 1 << 20,
                over_read: 1.0,
                ..NO_GAPS
            },
        );
        assert_eq!(p.reads.len(), 2);
    }

    #[test]
    fn decode_verifies_each_blob_and_keeps_the_good_ones() {
        let raw_a = vec![7u8; 3000];
        let raw_b = b"hello".repeat(1000);
        let packed_b = zstd::bulk::compress(&raw_b, 1).expect("zstd");
        let mut stored = raw_a.clone();
        stored.extend_from_slice(&[0u8; 16]); // a gap
        stored.extend_from_slice(&packed_b);
        stored.extend_from_slice(b"garbage!");
        let read = PackRead {
            pack: pack(9),
            range: 100..100 + stored.len() as u64,
            blobs: vec![
                Blob {
                    id: ChunkId::of(&raw_a),
                    offset: 100,
                    length: 3000,
                    raw_length: 3000,
                    codec: Codec::Raw,
                    tag: 0,
                },
                Blob {
                    id: ChunkId::of(&raw_b),
                    offset: 3116,
                    length: packed_b.len() as u32,
                    raw_length: raw_b.len() as u32,
                    codec: Codec::Zstd,
                    tag: 0,
                },
                Blob {
                    id: ChunkId::of(b"something else"),
                    offset: 3116 + packed_b.len() as u64,
                    length: 8,
                    raw_length: 8,
                    codec: Codec::Raw,
                    tag: 0,
                },
            ],
        };
        let f = decode(&Sealing::plain(), read, stored, Vec::new());
        assert_eq!(f.blob(0).expect("a"), &raw_a[..]);
        assert_eq!(f.blob(1).expect("b"), &raw_b[..]);
        assert!(matches!(f.blob(2), Err(BlobFault::Bad(_))));
        assert_eq!(f.stored(1), Some(&packed_b[..]));
        assert_eq!(
            f.first_fault().map(|(b, _)| b.offset),
            Some(3116 + packed_b.len() as u64)
        );
    }

    #[test]
    fn a_short_read_faults_only_the_blobs_it_cut() {
        let a = vec![1u8; 100];
        let read = PackRead {
            pack: pack(4),
            range: 0..200,
            blobs: vec![
                Blob {
                    id: ChunkId::of(&a),
                    offset: 0,
                    length: 100,
                    raw_length: 100,
                    codec: Codec::Raw,
                    tag: 0,
                },
                Blob {
                    id: ChunkId::of(b"x"),
                    offset: 100,
                    length: 100,
                    raw_length: 100,
                    codec: Codec::Raw,
                    tag: 0,
                },
            ],
        };
        let f = decode(&Sealing::plain(), read, a.clone(), Vec::new());
        assert_eq!(f.blob(0).expect("whole"), &a[..]);
        assert_eq!(f.blob(1).err(), Some(&BlobFault::ShortPack));
    }
}
