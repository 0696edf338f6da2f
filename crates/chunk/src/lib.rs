//! Content-defined chunking (FastCDC 2020) and BLAKE3 chunk addressing.
//!
//! [`Chunker`] is a push API over byte slices: it says where the next chunk
//! ends, or that it needs more bytes. [`BlockReader`] builds on it to turn any
//! [`std::io::Read`] into [`Block`]s: large buffers that hold whole chunks,
//! so that hashing and compression can fan out over a block's chunks.
//!
//! Chunk boundaries are part of the repository format: they depend only on
//! the bytes and the [`ChunkerParams`] recorded in the repository config.
//! A golden test pins them.

use std::io::{self, Read};
use std::sync::Arc;

pub mod batch;
mod tar;
pub use tar::{parse_tar_header, record_size, Member, MemberKind, TarHeader, TarScanner};

use cairn_model::{ChunkHasher, ChunkId, ChunkSizes, ChunkerParams};
use fastcdc::v2020::{self, MASKS};
use rayon::prelude::*;

/// Finds chunk boundaries with FastCDC 2020 normalized chunking.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker for validated parameters.
    ///
    /// # Panics
    /// If `params` fail [`ChunkerParams::validate`].
    #[must_use]
    pub fn new(params: ChunkerParams) -> Self {
        if let Err(e) = params.validate() {
            panic!("invariant: chunker params validated before use: {e}");
        }
        let bits = v2020::logarithm2(params.avg_size);
        let level = u32::from(params.normalization);
        Self {
            params,
            mask_s: MASKS[(bits + level) as usize],
            mask_l: MASKS[(bits - level) as usize],
        }
    }

    /// The parameters.
    #[must_use]
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the chunk that starts at `data[0]`, or `None` when more bytes
    /// are needed to decide (fewer than `max_size` bytes and not at `eof`).
    /// At `eof` the whole remainder may become the last chunk.
    #[must_use]
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() || (!eof && data.len() < self.params.max_size as usize) {
            return None;
        }
        let (_, len) = v2020::cut(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        Some(len)
    }

    /// Like [`Chunker::next_cut`], but the chunk never extends past `limit`
    /// bytes (a forced boundary): when `limit` lies inside `data`, the bytes
    /// up to it are chunked as if they ended there.
    #[must_use]
    pub fn next_cut_within(&self, data: &[u8], eof: bool, limit: Option<usize>) -> Option<usize> {
        match limit {
            Some(l) if l <= data.len() => self.next_cut(&data[..l], true),
            _ => self.next_cut(data, eof),
        }
    }

    /// All chunk lengths of a complete input.
    #[must_use]
    pub fn cuts(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(n) = self.next_cut(data, true) {
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

/// A buffer of whole chunks read from one input.
#[derive(Debug, Default)]
pub struct Block {
    /// Backing buffer; the block's bytes are `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    /// End offsets of each chunk in [`Block::data`], ascending; the last
    /// equals the block's length.
    pub ends: Vec<usize>,
    /// BLAKE3 ids of the chunks, when the reader was asked for them
    /// ([`BlockReader::hashed`]); empty otherwise.
    pub ids: Vec<ChunkId>,
    /// The member kind of each chunk, when the reader is tar-aware; empty
    /// otherwise.
    pub kinds: Vec<MemberKind>,
}

impl Block {
    /// The block's bytes.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the block holds no bytes (never true for a block from a reader).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates the chunks' byte slices.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let data = self.data();
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &data[start..end];
            start = end;
            s
        })
    }

    /// BLAKE3 ids of every chunk, in order.
    #[must_use]
    pub fn chunk_ids(&self) -> Vec<ChunkId> {
        self.chunks().map(ChunkId::of).collect()
    }
}

/// BLAKE3 ids of the chunks of `data` ending at `ends`, on the current rayon
/// pool. Runs of small chunks are hashed side by side ([`batch`]).
fn par_ids(h: ChunkHasher, data: &[u8], ends: &[usize]) -> Vec<ChunkId> {
    /// Bytes per task: enough to fill the SIMD lanes and amortise a task.
    const GROUP_BYTES: usize = 512 << 10;
    let mut groups = Vec::new();
    let (mut first, mut start) = (0, 0);
    for (i, &end) in ends.iter().enumerate() {
        if end - start >= GROUP_BYTES || i + 1 == ends.len() {
            groups.push(first..i + 1);
            (first, start) = (i + 1, end);
        }
    }
    let per_group: Vec<Vec<ChunkId>> = groups
        .into_par_iter()
        .map(|range| {
            let chunk = |i: usize| &data[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
            let small: Vec<&[u8]> = range
                .clone()
                .map(chunk)
                .filter(|c| c.len() <= batch::BATCH_MAX_LEN)
                .collect();
            let mut small = batch::hash_many_keyed(&small, h.key()).into_iter();
            range
                .map(|i| {
                    let c = chunk(i);
                    if c.len() <= batch::BATCH_MAX_LEN {
                        ChunkId(*small.next().expect("one digest per small chunk").as_bytes())
                    } else {
                        h.id(c)
                    }
                })
                .collect()
        })
        .collect();
    per_group.concat()
}

/// The chunker for each member kind.
#[derive(Debug, Clone)]
struct Chunkers {
    default: Chunker,
    vectors: Option<Chunker>,
    payload: Option<Chunker>,
    wal: Option<Chunker>,
}

impl Chunkers {
    fn new(default: Chunker) -> Self {
        let p = default.params();
        let own = |sizes: Option<ChunkSizes>| sizes.map(|s| Chunker::new(p.for_sizes(s)));
        Self {
            vectors: own(p.members.vectors),
            payload: own(p.members.payload),
            wal: own(p.members.wal),
            default,
        }
    }

    /// How to cut the data of `member` (the default chunker outside members).
    fn cutter(&self, member: Option<Member>) -> Cutter<'_> {
        let Some(m) = member else {
            return Cutter::Cdc(&self.default);
        };
        let own = match m.kind {
            MemberKind::Other => None,
            // Whole records when the layout is known. Otherwise the default:
            // byte-level cuts at the vector sizes cost 16x the chunks for
            // little gain.
            MemberKind::Vectors => match (&self.vectors, m.record_size) {
                (Some(chunker), Some(record)) => {
                    return Cutter::Records {
                        chunker,
                        record: record as usize,
                        data_start: m.data_start,
                    }
                }
                _ => None,
            },
            MemberKind::Payload => self.payload.as_ref(),
            MemberKind::Wal => self.wal.as_ref(),
        };
        Cutter::Cdc(own.unwrap_or(&self.default))
    }

    /// The largest maximum chunk size of any kind.
    fn max_size(&self) -> usize {
        [&self.vectors, &self.payload, &self.wal]
            .into_iter()
            .flatten()
            .chain([&self.default])
            .map(|c| c.params().max_size as usize)
            .max()
            .unwrap_or(0)
    }
}

/// Reads an input into [`Block`]s of about `block_size` bytes of whole chunks.
/// Memory use is bounded by about three blocks whatever the input size.
///
/// With [`BlockReader::parallel`], boundaries (and ids, with
/// [`BlockReader::hashed`]) are found on a rayon pool while the calling thread
/// reads the next block. The block is split at forced (tar) boundaries into
/// independent regions, large regions into pieces chunked speculatively from
/// arbitrary starts, and the pieces are stitched where the exact chain meets
/// a speculative cut (content-defined chains re-synchronise within a chunk or
/// two). The result is identical to sequential chunking; only the work is
/// spread out.
pub struct BlockReader<R> {
    reader: R,
    chunkers: Chunkers,
    block_size: usize,
    piece: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    hashed: bool,
    /// How ids are computed (keyed in encrypted repositories).
    id_hasher: ChunkHasher,
    /// Bytes after the last cut, to lead the next block.
    carry: Vec<u8>,
    /// The next block's bytes already read, after `headroom` spare bytes
    /// where the carry goes.
    ahead: Option<Vec<u8>>,
    eof: bool,
    /// Absolute stream offset of the next block's first byte.
    offset: u64,
    tar: Option<TarScanner>,
}

impl<R: Read> BlockReader<R> {
    /// Wraps `reader`. `block_size` is raised to at least twice the maximum
    /// chunk size (of any member kind).
    pub fn new(reader: R, chunker: Chunker, block_size: usize) -> Self {
        let chunkers = Chunkers::new(chunker);
        let block_size = block_size.max(2 * chunkers.max_size());
        Self {
            reader,
            chunkers,
            block_size,
            piece: 0,
            pool: None,
            hashed: false,
            id_hasher: ChunkHasher::PLAIN,
            carry: Vec::new(),
            ahead: None,
            eof: false,
            offset: 0,
            tar: None,
        }
    }

    /// Also cut at tar member boundaries (headers and data starts, nested
    /// tars included) when the input is a tar, and chunk each member with
    /// the sizes of its kind; see [`TarScanner`].
    #[must_use]
    pub fn tar_aware(mut self, on: bool) -> Self {
        self.tar = on.then(TarScanner::new);
        self
    }

    /// With [`BlockReader::tar_aware`]: record sizes of vector data known
    /// before the stream starts (see [`TarScanner::with_records`]).
    #[must_use]
    pub fn tar_records(mut self, records: Vec<(String, u32)>) -> Self {
        if self.tar.is_some() && !records.is_empty() {
            self.tar = Some(TarScanner::with_records(records));
        }
        self
    }

    /// Finds boundaries in parallel on `pool` (rayon's global pool when
    /// `None`), in pieces of about `piece` bytes (raised to at least four
    /// maximum chunk sizes), while the calling thread reads ahead; 0 keeps
    /// everything on the calling thread. Boundaries do not change.
    #[must_use]
    pub fn parallel(mut self, piece: usize, pool: Option<Arc<rayon::ThreadPool>>) -> Self {
        self.piece = if piece == 0 {
            0
        } else {
            piece.max(4 * self.chunkers.max_size())
        };
        self.pool = pool;
        self
    }

    /// Also computes each chunk's id ([`Block::ids`]), in parallel when
    /// [`BlockReader::parallel`] is on.
    #[must_use]
    pub fn hashed(mut self, on: bool) -> Self {
        self.hashed = on;
        self
    }

    /// Computes ids with `h` (keyed BLAKE3 in an encrypted repository).
    #[must_use]
    pub fn id_hasher(mut self, h: ChunkHasher) -> Self {
        self.id_hasher = h;
        self
    }

    /// The wrapped reader (for example to read a digest it kept).
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Room kept in front of read-ahead buffers for the carry.
    fn headroom(&self) -> usize {
        2 * self.chunkers.max_size()
    }

    /// The next block's buffer and where its bytes start: the carry followed
    /// by new bytes (read ahead or read now).
    fn assemble(&mut self) -> io::Result<(Vec<u8>, usize)> {
        let carry = std::mem::take(&mut self.carry);
        let ahead = match self.ahead.take() {
            Some(a) => Some(a),
            None if self.eof => None,
            None if self.piece == 0 => {
                let mut data = carry;
                data.reserve_exact(self.block_size.saturating_sub(data.len()));
                fill(&mut self.reader, &mut data, self.block_size, &mut self.eof)?;
                return Ok((data, 0));
            }
            None => {
                let headroom = self.headroom();
                Some(read_ahead(
                    &mut self.reader,
                    headroom,
                    self.block_size,
                    &mut self.eof,
                )?)
            }
        };
        let Some(mut buf) = ahead else {
            return Ok((carry, 0));
        };
        let headroom = self.headroom();
        if carry.len() <= headroom {
            let start = headroom - carry.len();
            buf[start..headroom].copy_from_slice(&carry);
            Ok((buf, start))
        } else {
            let mut data = carry;
            data.extend_from_slice(&buf[headroom..]);
            Ok((data, 0))
        }
    }

    /// The next block, or `None` at the end of the input.
    ///
    /// # Errors
    /// Read errors from the underlying reader (interrupted reads are retried).
    pub fn next_block(&mut self) -> io::Result<Option<Block>> {
        let (mut buf, start) = self.assemble()?;
        if buf.len() == start {
            return Ok(None);
        }
        let data = &buf[start..];
        let base = self.offset;
        // Forced boundaries inside the block, found on a copy of the scanner
        // so that its state advances below exactly as far as the block is cut.
        // (boundary, the member whose data follows it)
        let mut forced = Vec::new();
        let mut first_member = None;
        if let Some(t) = &self.tar {
            let mut t = t.clone();
            first_member = t.member_at(base);
            let mut pos = base;
            while let Some(b) = t.next_boundary(data, base, pos) {
                match usize::try_from(b - base) {
                    Ok(rel) if rel <= data.len() => forced.push((rel, t.member_at(b))),
                    _ => break,
                }
                pos = b;
            }
        }
        // Independent regions: each starts at an exact cut and ends at a
        // forced boundary (chunked as if the input ended there) or at the
        // end of the block, and is cut as its member's kind says.
        let chunkers = &self.chunkers;
        let mut regions = Vec::with_capacity(forced.len() + 1);
        // (region end, kind of its member)
        let mut region_kinds = Vec::with_capacity(forced.len() + 1);
        let (mut region_start, mut member) = (0, first_member);
        for &(b, next) in &forced {
            let cutter = chunkers.cutter(member).at(base + region_start as u64);
            regions.push((region_start, b, true, cutter));
            region_kinds.push((b, member.map_or(MemberKind::Other, |m| m.kind)));
            (region_start, member) = (b, next);
        }
        let cutter = chunkers.cutter(member).at(base + region_start as u64);
        regions.push((region_start, data.len(), self.eof, cutter));
        region_kinds.push((data.len(), member.map_or(MemberKind::Other, |m| m.kind)));

        let (piece, hashed, h) = (self.piece, self.hashed, self.id_hasher);
        let (ends, ids) = if piece == 0 {
            let ends = cut_regions(0, data, &regions);
            let ids = if hashed {
                ends_to_ids(h, data, &ends)
            } else {
                Vec::new()
            };
            (ends, ids)
        } else {
            // Cut (and hash) on the pool while this thread reads ahead.
            let mut out = (Vec::new(), Vec::new());
            let slot = &mut out;
            let regions = &regions;
            let (headroom, block_size) = (self.headroom(), self.block_size);
            let (reader, eof) = (&mut self.reader, &mut self.eof);
            let ahead = in_scope(self.pool.as_deref(), |s| {
                s.spawn(move |_| {
                    let ends = cut_regions(piece, data, regions);
                    let ids = if hashed {
                        par_ids(h, data, &ends)
                    } else {
                        Vec::new()
                    };
                    *slot = (ends, ids);
                });
                if *eof {
                    return Ok(None);
                }
                read_ahead(reader, headroom, block_size, eof).map(Some)
            })?;
            self.ahead = ahead;
            out
        };
        let pos = ends.last().copied().unwrap_or(0);
        let kinds = if self.tar.is_some() {
            let mut r = region_kinds.iter().peekable();
            ends.iter()
                .map(|&e| {
                    while r.peek().is_some_and(|&&(end, _)| end < e) {
                        r.next();
                    }
                    r.peek().map_or(MemberKind::Other, |&&(_, k)| k)
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(t) = &mut self.tar {
            let _ = t.next_boundary(data, base, base + pos as u64);
        }
        self.offset += pos as u64;
        if pos < data.len() {
            self.carry = data[pos..].to_vec();
            buf.truncate(start + pos);
        }
        Ok(Some(Block {
            buf,
            start,
            ends,
            ids,
            kinds,
        }))
    }
}

/// Runs `op` on the calling thread in a scope whose spawned work goes to
/// `pool` (rayon's global pool when `None`).
fn in_scope<'s, T>(pool: Option<&rayon::ThreadPool>, op: impl FnOnce(&rayon::Scope<'s>) -> T) -> T {
    match pool {
        Some(p) => p.in_place_scope(op),
        None => rayon::in_place_scope(op),
    }
}

/// Reads up to `block_size` new bytes into a buffer after `headroom` spare
/// bytes (where the carry will go).
fn read_ahead(
    reader: &mut impl Read,
    headroom: usize,
    block_size: usize,
    eof: &mut bool,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(headroom + block_size);
    buf.resize(headroom, 0);
    fill(reader, &mut buf, headroom + block_size, eof)?;
    Ok(buf)
}

/// Reads from `reader` into `buf` until it holds `limit` bytes or the input
/// ends (setting `eof`), straight into spare capacity.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, limit: usize, eof: &mut bool) -> io::Result<()> {
    while !*eof && buf.len() < limit {
        let want = (limit - buf.len()) as u64;
        match reader.take(want).read_to_end(buf) {
            Ok(0) => *eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn ends_to_ids(h: ChunkHasher, data: &[u8], ends: &[usize]) -> Vec<ChunkId> {
    let mut start = 0;
    ends.iter()
        .map(|&e| {
            let id = h.id(&data[start..e]);
            start = e;
            id
        })
        .collect()
}

/// How a region's data is cut.
#[derive(Debug, Clone, Copy)]
enum Cutter<'c> {
    /// FastCDC with these parameters.
    Cdc(&'c Chunker),
    /// Whole vector records of `record` bytes counted from the member's
    /// `data_start` (see [`record_cuts`]), with these size bounds.
    Records {
        chunker: &'c Chunker,
        record: usize,
        data_start: u64,
    },
}

impl<'c> Cutter<'c> {
    /// For a region starting at absolute offset `start`: records cutters
    /// turn `data_start` into how far into a record the region starts.
    fn at(self, start: u64) -> RegionCutter<'c> {
        match self {
            Cutter::Cdc(c) => RegionCutter::Cdc(c),
            Cutter::Records {
                chunker,
                record,
                data_start,
            } => RegionCutter::Records {
                chunker,
                record,
                phase: ((start - data_start) % record as u64) as usize,
            },
        }
    }
}

/// A [`Cutter`] placed on a region.
#[derive(Debug, Clone, Copy)]
enum RegionCutter<'c> {
    Cdc(&'c Chunker),
    Records {
        chunker: &'c Chunker,
        record: usize,
        /// Bytes of a record before the region's start (0: it starts on a record).
        phase: usize,
    },
}

/// The cut decision hash of one vector record. Its first 32 and last 32
/// bytes (the whole record zero-padded to 64 bytes when it is shorter) are
/// read as eight little-endian `u64` words and folded: starting from 0, for
/// each word `h = (h ^ w) * K1; h ^= h >> 29`; then `h ^= h >> 32; h *= K2;
/// h ^= h >> 32` (wrapping arithmetic). A few nanoseconds per record: with
/// 512-byte records a cryptographic hash here cost a third of a re-backup.
#[must_use]
pub fn record_hash(record: &[u8]) -> u64 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xD6E8_FEB8_6659_FD93;
    let mut buf = [0u8; 64];
    if record.len() >= 64 {
        buf[..32].copy_from_slice(&record[..32]);
        buf[32..].copy_from_slice(&record[record.len() - 32..]);
    } else {
        buf[..record.len()].copy_from_slice(record);
    }
    let mut h = 0u64;
    for w in buf.chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("invariant: 8 bytes"))).wrapping_mul(K1);
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h = h.wrapping_mul(K2);
    h ^ (h >> 32)
}

/// Record-aligned content-defined cuts of `data` (region offsets): chunks
/// are runs of whole `record`-byte records. With the chunker's sizes in
/// records (`min = max(1, min_size / record)`, `avg = max(min, avg_size /
/// record)`, `max = max(avg, max_size / record)`), a chunk ends after a
/// record once it holds at least `min` records and either the record's
/// [`record_hash`] is `avg - min` modulo `avg - min + 1` or it holds `max`
/// records. (All-zero records hash to 0, so runs of them make `max`-record
/// chunks.)
/// Records wider than `avg_size` are thus chunks of their own. A region
/// that starts `phase` bytes into a record adds that partial record to
/// its first chunk; at `eof` the remainder (a partial record) ends the last
/// chunk. Without `eof`, bytes after the last cut are left for the next call.
#[must_use]
pub fn record_cuts(
    params: &ChunkerParams,
    record: usize,
    phase: usize,
    data: &[u8],
    eof: bool,
) -> Vec<usize> {
    assert!(record > 0, "invariant: record size is positive");
    let min = (params.min_size as usize / record).max(1);
    let avg = (params.avg_size as usize / record).max(min);
    let max = (params.max_size as usize / record).max(avg);
    let modulus = (avg - min + 1) as u64;
    let mut out = Vec::new();
    let mut pos = if phase == 0 { 0 } else { record - phase };
    let mut count = 0;
    while pos + record <= data.len() {
        let r = &data[pos..pos + record];
        pos += record;
        count += 1;
        if count >= min && (count >= max || record_hash(r) % modulus == modulus - 1) {
            out.push(pos);
            count = 0;
        }
    }
    if eof && out.last().copied().unwrap_or(0) < data.len() {
        out.push(data.len());
    }
    out
}

/// A region of a block: start, end, whether to cut at its end, and how.
type Region<'c> = (usize, usize, bool, RegionCutter<'c>);

/// End offsets of every chunk of `regions` of `data`, in order, in pieces
/// of `piece` bytes (0: sequentially). Only the last region may leave a tail
/// uncut.
fn cut_regions(piece: usize, data: &[u8], regions: &[Region<'_>]) -> Vec<usize> {
    let one = |&(s, e, eof, cutter): &Region<'_>| -> Vec<usize> {
        let region = &data[s..e];
        let chunker = match cutter {
            RegionCutter::Cdc(c) => c,
            RegionCutter::Records {
                chunker,
                record,
                phase,
            } => {
                let mut cuts = record_cuts(&chunker.params(), record, phase, region, eof);
                for c in &mut cuts {
                    *c += s;
                }
                return cuts;
            }
        };
        let mut cuts = if piece == 0 || region.len() < 2 * piece {
            chain(chunker, region, eof, 0, usize::MAX)
        } else {
            cut_speculatively(chunker, region, eof, piece)
        };
        for c in &mut cuts {
            *c += s;
        }
        cuts
    };
    let per_region: Vec<Vec<usize>> = if piece == 0 {
        regions.iter().map(one).collect()
    } else {
        regions.par_iter().map(one).collect()
    };
    per_region.concat()
}

/// The exact chain of cuts of `data` from `from` (an exact cut), as region
/// offsets, stopping after the first cut at or past `until` or where more
/// bytes are needed.
fn chain(chunker: &Chunker, data: &[u8], eof: bool, from: usize, until: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < until {
        let Some(n) = chunker.next_cut(&data[pos..], eof) else {
            break;
        };
        pos += n;
        out.push(pos);
    }
    out
}

/// Cuts `data` as [`chain`] from 0 would, with pieces of about `piece` bytes
/// chunked in parallel from their own starts and then stitched.
fn cut_speculatively(chunker: &Chunker, data: &[u8], eof: bool, piece: usize) -> Vec<usize> {
    let starts: Vec<usize> = (0..data.len() / piece).map(|i| i * piece).collect();
    let guesses: Vec<Vec<usize>> = starts
        .par_iter()
        .enumerate()
        .map(|(i, &s)| {
            let until = starts.get(i + 1).copied().unwrap_or(usize::MAX);
            chain(chunker, data, eof, s, until)
        })
        .collect();
    let mut guesses = guesses.into_iter();
    // The first piece starts at an exact cut, so its chain is exact.
    let mut out = guesses.next().unwrap_or_default();
    for guess in guesses {
        let Some(&last) = guess.last() else { continue };
        let mut pos = out.last().copied().unwrap_or(0);
        // Follow the exact chain until it lands on one of this piece's cuts;
        // from there the two chains are the same.
        while pos < last {
            let Some(n) = chunker.next_cut(&data[pos..], eof) else {
                return out;
            };
            pos += n;
            if let Ok(i) = guess.binary_search(&pos) {
                out.extend_from_slice(&guess[i..]);
                break;
            }
            out.push(pos);
        }
    }
    let tail_from = out.last().copied().unwrap_or(0);
    out.extend(chain(chunker, data, eof, tail_from, usize::MAX));
    out
}

impl<R: Read> Iterator for BlockReader<R> {
    type Item = io::Result<Block>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

#[cfg(test)]
mod tests;
