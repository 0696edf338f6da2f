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

mod tar;
pub use tar::TarScanner;

use cairn_model::{ChunkId, ChunkerParams};
use fastcdc::v2020::{self, MASKS};

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
    /// The bytes.
    pub data: Vec<u8>,
    /// End offsets of each chunk in `data`, ascending; the last equals `data.len()`.
    pub ends: Vec<usize>,
}

impl Block {
    /// Iterates the chunks' byte slices.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.data[start..end];
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

/// Reads an input into [`Block`]s of about `block_size` bytes of whole chunks.
/// Memory use is bounded by `block_size + max_size` whatever the input size.
pub struct BlockReader<R> {
    reader: R,
    chunker: Chunker,
    block_size: usize,
    carry: Vec<u8>,
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
            carry: Vec::new(),
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

    /// The next block, or `None` at the end of the input.
    ///
    /// # Errors
    /// Read errors from the underlying reader (interrupted reads are retried).
    pub fn next_block(&mut self) -> io::Result<Option<Block>> {
        let mut data = std::mem::take(&mut self.carry);
        data.reserve(self.block_size.saturating_sub(data.len()));
        // Fill up to block_size (or EOF).
        while !self.eof && data.len() < self.block_size {
            let start = data.len();
            data.resize(self.block_size, 0);
            match self.reader.read(&mut data[start..]) {
                Ok(0) => {
                    data.truncate(start);
                    self.eof = true;
                }
                Ok(n) => data.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => data.truncate(start),
                Err(e) => return Err(e),
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        let mut ends = Vec::with_capacity(data.len() / self.chunker.params().avg_size as usize + 1);
        let mut pos = 0;
        let base = self.offset;
        loop {
            let limit = self.tar.as_mut().and_then(|t| {
                let b = t.next_boundary(&data, base, base + pos as u64)?;
                usize::try_from(b - base).ok().map(|b| b - pos)
            });
            let Some(n) = self.chunker.next_cut_within(&data[pos..], self.eof, limit) else {
                break;
            };
            pos += n;
            ends.push(pos);
        }
        self.offset += pos as u64;
        if pos < data.len() {
            self.carry = data[pos..].to_vec();
            data.truncate(pos);
        }
        Ok(Some(Block { data, ends }))
    }
}

impl<R: Read> Iterator for BlockReader<R> {
    type Item = io::Result<Block>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

#[cfg(test)]
mod tests;
