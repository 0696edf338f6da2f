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

mod tar;
pub use tar::TarScanner;

use cairn_model::{ChunkId, ChunkerParams};
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

/// BLAKE3 ids of the chunks of `data` ending at `ends`, on the current rayon pool.
fn par_ids(data: &[u8], ends: &[usize]) -> Vec<ChunkId> {
    (0..ends.len())
        .into_par_iter()
        .map(|i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            ChunkId::of(&data[start..ends[i]])
        })
        .collect()
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
    chunker: Chunker,
    block_size: usize,
    piece: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    hashed: bool,
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
    /// Wraps `reader`. `block_size` is raised to at least twice the maximum chunk size.
    pub fn new(reader: R, chunker: Chunker, block_size: usize) -> Self {
        let block_size = block_size.max(2 * chunker.params().max_size as usize);
        Self {
            reader,
            chunker,
            block_size,
            piece: 0,
            pool: None,
            hashed: false,
            carry: Vec::new(),
            ahead: None,
            eof: false,
            offset: 0,
            tar: None,
        }
    }

    /// Also cut at tar member boundaries (headers and data starts, nested
    /// tars included) when the input is a tar; see [`TarScanner`].
    #[must_use]
    pub fn tar_aware(mut self, on: bool) -> Self {
        self.tar = on.then(TarScanner::new);
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
            piece.max(4 * self.chunker.params().max_size as usize)
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

    /// The wrapped reader (for example to read a digest it kept).
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Room kept in front of read-ahead buffers for the carry.
    fn headroom(&self) -> usize {
        2 * self.chunker.params().max_size as usize
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
        let mut forced = Vec::new();
        if let Some(t) = &self.tar {
            let mut t = t.clone();
            let mut pos = base;
            while let Some(b) = t.next_boundary(data, base, pos) {
                match usize::try_from(b - base) {
                    Ok(rel) if rel <= data.len() => forced.push(rel),
                    _ => break,
                }
                pos = b;
            }
        }
        // Independent regions: each starts at an exact cut and ends at a
        // forced boundary (chunked as if the input ended there) or at the
        // end of the block.
        let mut regions = Vec::with_capacity(forced.len() + 1);
        let mut region_start = 0;
        for &b in &forced {
            regions.push((region_start, b, true));
            region_start = b;
        }
        regions.push((region_start, data.len(), self.eof));

        let (chunker, piece, hashed) = (&self.chunker, self.piece, self.hashed);
        let (ends, ids) = if piece == 0 {
            let ends = cut_regions(chunker, 0, data, &regions);
            let ids = if hashed {
                ends_to_ids(data, &ends)
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
                    let ends = cut_regions(chunker, piece, data, regions);
                    let ids = if hashed {
                        par_ids(data, &ends)
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

fn ends_to_ids(data: &[u8], ends: &[usize]) -> Vec<ChunkId> {
    let mut start = 0;
    ends.iter()
        .map(|&e| {
            let id = ChunkId::of(&data[start..e]);
            start = e;
            id
        })
        .collect()
}

/// End offsets of every chunk of `regions` (start, end, cut-at-end) of
/// `data`, in order, in pieces of `piece` bytes (0: sequentially). Only the
/// last region may leave a tail uncut.
fn cut_regions(
    chunker: &Chunker,
    piece: usize,
    data: &[u8],
    regions: &[(usize, usize, bool)],
) -> Vec<usize> {
    let one = |&(s, e, eof): &(usize, usize, bool)| -> Vec<usize> {
        let region = &data[s..e];
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
