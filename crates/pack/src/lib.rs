//! Pack files: many compressed chunks in one object, readable without any
//! other repository file.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   "CAIRNPAK" | u16 version (1) | 6 reserved bytes        16 bytes
//! blobs    each chunk's stored bytes (raw, or one zstd frame)       …
//! trailer  one 49-byte entry per blob: chunk id, u64 offset,
//!          u32 stored length, u32 raw length, u8 codec              49 × n
//! footer   u64 trailer offset | u32 entry count | u32 reserved |
//!          BLAKE3 of every preceding byte | "CAIRNEND"             56 bytes
//! ```
//!
//! A pack's id is the BLAKE3 of the whole file. Blobs are verified on read:
//! a decoded chunk must hash to its id.
//!
//! In an encrypted repository packs are version 2: every blob's stored
//! bytes and the trailer (as a whole) are sealed ([`Sealing`]), so a pack
//! reveals only its blobs' sealed lengths; chunk ids are keyed BLAKE3.

use std::sync::Arc;

use cairn_crypto::{Keys, Kind, PackSeal, BLOB_HEAD, BOX_OVERHEAD, TAG_LEN};
use cairn_model::{ChunkHasher, ChunkId, Codec, Compression, IndexEntry, PackId, INDEX_ENTRY_LEN};

/// Pack header magic.
pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPAK";
/// Pack footer magic.
pub const PACK_END: &[u8; 8] = b"CAIRNEND";
/// Pack layout version (plain).
pub const PACK_VERSION: u16 = 1;
/// Pack layout version of sealed packs (encrypted repositories).
pub const PACK_VERSION_SEALED: u16 = 2;

/// Header length.
pub const HEADER_LEN: usize = 16;
/// Footer length.
pub const FOOTER_LEN: usize = 56;

/// How a repository seals blobs and names chunks: plainly, or with its
/// keys (sealed blobs and trailers, keyed chunk ids).
#[derive(Debug, Clone, Default)]
pub struct Sealing {
    keys: Option<Arc<Keys>>,
    ids: ChunkHasher,
}

impl Sealing {
    /// No encryption: plain BLAKE3 ids, nothing sealed.
    #[must_use]
    pub fn plain() -> Self {
        Self::default()
    }

    /// Sealed with `keys`, ids keyed with its id key.
    #[must_use]
    pub fn with_keys(keys: Arc<Keys>) -> Self {
        let ids = ChunkHasher::keyed(*keys.id_key());
        Self {
            keys: Some(keys),
            ids,
        }
    }

    /// The keys, when encrypted.
    #[must_use]
    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    /// True when blobs are sealed.
    #[must_use]
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// How chunk ids are computed.
    #[must_use]
    pub fn ids(&self) -> ChunkHasher {
        self.ids
    }

    /// The pack version this repository writes and reads.
    #[must_use]
    pub fn pack_version(&self) -> u16 {
        if self.is_sealed() {
            PACK_VERSION_SEALED
        } else {
            PACK_VERSION
        }
    }

    /// The bytes a blob holds once opened: `stored` itself when nothing is
    /// sealed, else opened into `scratch` (emptied first).
    ///
    /// # Errors
    /// [`Error::BadChunk`] (with `id`) when the blob does not authenticate.
    pub fn open_blob<'a>(
        &self,
        stored: &'a [u8],
        id: ChunkId,
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        match &self.keys {
            None => Ok(stored),
            Some(k) => {
                scratch.clear();
                k.open_blob_into(stored, id.as_bytes(), scratch)
                    .map_err(|e| Error::BadChunk {
                        id,
                        reason: e.to_string(),
                    })?;
                Ok(scratch)
            }
        }
    }

    /// Bytes a trailer of `n` entries takes in a pack.
    #[must_use]
    pub fn trailer_len(&self, n: u32) -> u64 {
        u64::from(n) * INDEX_ENTRY_LEN as u64
            + if self.is_sealed() {
                BOX_OVERHEAD as u64
            } else {
                0
            }
    }
}

/// Pack encoding and decoding errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pack's structure or checksum is wrong.
    #[error("corrupt pack: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// A blob did not decode to the bytes its id names.
    #[error("chunk {id} is corrupt: {reason}")]
    BadChunk {
        /// The chunk.
        id: ChunkId,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt {
        reason: reason.into(),
    }
}

/// Bytes of a chunk's middle compressed first to judge whether the whole
/// chunk is worth compressing.
const SAMPLE_LEN: usize = 4096;

/// Percentage points by which a sample may fall short of the required saving
/// and still have its chunk compressed whole.
const SAMPLE_MARGIN: usize = 1;

thread_local! {
    /// One zstd context per thread (and level), reused across chunks.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `data` at `level` with this thread's reused context.
fn zstd_compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = cell.as_mut()?;
        c.compress(data).ok()
    })
}

/// Whether chunks like `sample` are worth trying to compress: false when
/// zstd saves less than the required share on it. For judging many small
/// chunks of one kind (say float vectors) at once.
#[must_use]
pub fn sample_worth_compressing(sample: &[u8], c: Compression) -> bool {
    if c.zstd_level == 0 || sample.is_empty() {
        return false;
    }
    let saving = usize::from(c.min_saving_percent.min(100));
    zstd_compress(sample, c.zstd_level)
        .is_some_and(|out| out.len() * 100 <= sample.len() * (100 - saving))
}

/// Compresses `raw` when that pays: returns the zstd frame only if it saves
/// at least `min_saving_percent` of the size. `None` means store raw.
///
/// Chunks much larger than [`SAMPLE_LEN`] are judged first by compressing a
/// sample from their middle: when the sample saves less than the required
/// share minus [`SAMPLE_MARGIN`] points (a small frame carries relatively
/// more overhead), the chunk is stored raw without compressing it whole.
/// Float32 vector data (which zstd shrinks by only a few percent) is
/// recognised this way at a small fraction of the cost of compressing it.
#[must_use]
pub fn compress(raw: &[u8], c: Compression) -> Option<Vec<u8>> {
    if c.zstd_level == 0 || raw.len() < 64 {
        return None;
    }
    let saving = usize::from(c.min_saving_percent.min(100));
    if raw.len() >= 4 * SAMPLE_LEN {
        let mid = (raw.len() - SAMPLE_LEN) / 2;
        let sample = zstd_compress(&raw[mid..mid + SAMPLE_LEN], c.zstd_level)?;
        if sample.len() * 100 > SAMPLE_LEN * (100 - saving.saturating_sub(SAMPLE_MARGIN)) {
            return None;
        }
    }
    let out = zstd_compress(raw, c.zstd_level)?;
    let limit = raw.len() - raw.len() * saving / 100;
    (out.len() < limit).then_some(out)
}

/// Decodes a stored blob and checks it against its id.
///
/// # Errors
/// [`Error::BadChunk`] when decompression fails, the length is wrong or the
/// hash does not match.
pub fn decode_blob(
    sealing: &Sealing,
    stored: &[u8],
    entry_id: ChunkId,
    codec: Codec,
    raw_length: u32,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_blob_into(sealing, stored, entry_id, codec, raw_length, &mut out)?;
    Ok(out)
}

/// Checks a raw (uncompressed) blob against its id and length, in place.
///
/// # Errors
/// [`Error::BadChunk`] when the length or the hash is wrong.
pub fn verify_raw(
    ids: ChunkHasher,
    stored: &[u8],
    entry_id: ChunkId,
    raw_length: u32,
) -> Result<()> {
    let bad = |reason: String| Error::BadChunk {
        id: entry_id,
        reason,
    };
    if stored.len() != raw_length as usize {
        return Err(bad(format!(
            "{} bytes, expected {raw_length}",
            stored.len()
        )));
    }
    if ids.id(stored) != entry_id {
        return Err(bad("content does not match its id".into()));
    }
    Ok(())
}

thread_local! {
    /// One zstd decompression context per thread, reused across blobs.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a zstd blob of `raw_length` bytes, appending it to `out`
/// (on error `out` is left as it was). The caller verifies the result
/// against the chunk id (readers that verify many blobs at once hash them
/// together).
///
/// # Errors
/// [`Error::BadChunk`] (with a zero id) when decompression fails or yields
/// another length.
pub fn decompress_into(stored: &[u8], raw_length: u32, out: &mut Vec<u8>) -> Result<()> {
    let bad = |reason: String| Error::BadChunk {
        id: ChunkId([0; 32]),
        reason,
    };
    let start = out.len();
    let raw_len = raw_length as usize;
    // Decompressed straight into spare capacity, appended: nothing is zeroed first.
    out.reserve(raw_len);
    let n = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        let d = cell.as_mut().expect("invariant: set above");
        let mut at = std::io::Cursor::new(&mut *out);
        at.set_position(start as u64);
        d.decompress_to_buffer(stored, &mut at)
    });
    match n {
        Ok(n) if n == raw_len => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(bad(format!("{n} bytes, expected {raw_length}")))
        }
        Err(e) => {
            out.truncate(start);
            Err(bad(format!("zstd: {e}")))
        }
    }
}

/// Like [`decode_blob`], but appends the raw bytes to `out` (on error `out`
/// is left as it was): one copy for raw blobs, none beyond decompression
/// for compressed ones.
///
/// # Errors
/// As [`decode_blob`].
pub fn decode_blob_into(
    sealing: &Sealing,
    stored: &[u8],
    entry_id: ChunkId,
    codec: Codec,
    raw_length: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let bad = |reason: String| Error::BadChunk {
        id: entry_id,
        reason,
    };
    let mut scratch = Vec::new();
    let stored = sealing.open_blob(stored, entry_id, &mut scratch)?;
    let start = out.len();
    match codec {
        Codec::Raw => {
            verify_raw(sealing.ids(), stored, entry_id, raw_length)?;
            out.extend_from_slice(stored);
            return Ok(());
        }
        Codec::Zstd => decompress_into(stored, raw_length, out).map_err(|e| match e {
            Error::BadChunk { reason, .. } => bad(reason),
            other => other,
        })?,
    }
    if sealing.ids().id(&out[start..]) != entry_id {
        out.truncate(start);
        return Err(bad("content does not match its id".into()));
    }
    Ok(())
}

/// Builds one pack in memory.
#[derive(Debug)]
pub struct PackWriter {
    buf: Vec<u8>,
    entries: Vec<IndexEntry>,
    seal: Option<PackSeal>,
    /// Entries written plain with room for a one-time key and a tag, sealed in
    /// place by [`PackWriter::finish`] (off the thread that pushes).
    to_seal: Vec<usize>,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its blobs.
    pub entries: Vec<IndexEntry>,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack with its header written.
    #[must_use]
    pub fn new() -> Self {
        Self::with_buffer(Vec::new(), 1 << 20)
    }

    /// An empty pack built in `buf` (emptied first; e.g. a finished pack's
    /// bytes, so that a run reuses its pack buffers instead of allocating
    /// and faulting in new ones), with room for `capacity` bytes.
    #[must_use]
    pub fn with_buffer(mut buf: Vec<u8>, capacity: usize) -> Self {
        buf.clear();
        buf.reserve(capacity);
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        buf.extend_from_slice(&[0u8; 6]);
        Self {
            buf,
            entries: Vec::new(),
            seal: None,
            to_seal: Vec::new(),
        }
    }

    /// Seals what this pack holds as `sealing` says (a version 2 pack,
    /// sealed to the repository key under a one-time key pair of its own,
    /// when it has keys). Call before the first [`PackWriter::push`].
    #[must_use]
    pub fn sealed(mut self, sealing: &Sealing) -> Self {
        self.seal = sealing.keys().map(|k| k.pack_seal());
        self.buf[8..10].copy_from_slice(&sealing.pack_version().to_le_bytes());
        self
    }

    /// Appends a blob: `compressed` from [`compress`], or `None` to store `raw` as is.
    pub fn push(&mut self, id: ChunkId, raw: &[u8], compressed: Option<&[u8]>) {
        let (codec, stored) = match compressed {
            Some(c) => (Codec::Zstd, c),
            None => (Codec::Raw, raw),
        };
        let offset = self.buf.len();
        if self.seal.is_some() {
            // Room for the one-time key and the tag; sealed by finish.
            self.buf.extend_from_slice(&[0u8; BLOB_HEAD]);
            self.buf.extend_from_slice(stored);
            self.buf.extend_from_slice(&[0u8; TAG_LEN]);
            self.to_seal.push(self.entries.len());
        } else {
            self.buf.extend_from_slice(stored);
        }
        self.entries.push(IndexEntry {
            id,
            offset: offset as u64,
            length: u32::try_from(self.buf.len() - offset).expect("invariant: chunks are < 16 MiB"),
            raw_length: u32::try_from(raw.len()).expect("invariant: chunks are < 16 MiB"),
            codec,
        });
    }

    /// Appends a blob as another pack of this repository stored it (sealed
    /// blobs stay as sealed, compressed ones as compressed): a repack copies
    /// verified blobs without redoing their work.
    pub fn push_stored(&mut self, id: ChunkId, stored: &[u8], raw_length: u32, codec: Codec) {
        let offset = self.buf.len();
        self.buf.extend_from_slice(stored);
        self.entries.push(IndexEntry {
            id,
            offset: offset as u64,
            length: u32::try_from(stored.len()).expect("invariant: chunks are < 16 MiB"),
            raw_length,
            codec,
        });
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pack's size once finished (trailer and footer included).
    #[must_use]
    pub fn finished_len(&self) -> usize {
        self.buf.len()
            + self.entries.len() * INDEX_ENTRY_LEN
            + if self.seal.is_some() { BOX_OVERHEAD } else { 0 }
            + FOOTER_LEN
    }

    /// Empties the pack, keeping its buffer (a dry run's packs go nowhere).
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.entries.clear();
        self.to_seal.clear();
    }

    /// Writes trailer and footer.
    #[must_use]
    pub fn finish(mut self) -> FinishedPack {
        if let Some(k) = &self.seal {
            for &i in &self.to_seal {
                let e = &self.entries[i];
                let at = usize::try_from(e.offset).expect("invariant: a pack fits in memory");
                k.seal_blob_in_place(&mut self.buf[at..at + e.length as usize], e.id.as_bytes());
            }
        }
        let trailer_offset = self.buf.len() as u64;
        match &self.seal {
            None => {
                for e in &self.entries {
                    e.encode(&mut self.buf);
                }
            }
            Some(k) => {
                let mut trailer = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_LEN);
                for e in &self.entries {
                    e.encode(&mut trailer);
                }
                k.seal_trailer_into(&trailer, &mut self.buf);
            }
        }
        self.buf.extend_from_slice(&trailer_offset.to_le_bytes());
        let n = u32::try_from(self.entries.len()).expect("invariant: < 4G entries");
        self.buf.extend_from_slice(&n.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        // One pass over the pack gives both hashes: the checksum of every
        // byte before it, then (continuing) the pack id over the whole file.
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.buf);
        let sum = hasher.finalize();
        let tail_start = self.buf.len();
        self.buf.extend_from_slice(sum.as_bytes());
        self.buf.extend_from_slice(PACK_END);
        hasher.update(&self.buf[tail_start..]);
        FinishedPack {
            id: PackId(*hasher.finalize().as_bytes()),
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

impl FinishedPack {
    /// The same pack with `salt` in the header's six reserved bytes, and so
    /// another id. Packs are named by their content, so packing the same
    /// blobs in the same order again gives the same id; a writer that must
    /// not produce a particular id (that of a pack a prune is deleting)
    /// salts it away.
    #[must_use]
    pub fn salted(mut self, salt: [u8; 6]) -> Self {
        self.bytes[10..16].copy_from_slice(&salt);
        let len = self.bytes.len();
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.bytes[..len - 40]);
        let sum = hasher.finalize();
        self.bytes[len - 40..len - 8].copy_from_slice(sum.as_bytes());
        hasher.update(&self.bytes[len - 40..]);
        self.id = PackId(*hasher.finalize().as_bytes());
        self
    }

    /// Salts the pack (randomly) until its id is not one of `avoid`.
    #[must_use]
    pub fn avoiding(mut self, avoid: &std::collections::HashSet<PackId>) -> Self {
        let mut n: u64 = 0;
        while avoid.contains(&self.id) {
            n += 1;
            let salt = blake3::hash(&[self.id.0.as_slice(), &n.to_le_bytes()].concat());
            let mut six = [0u8; 6];
            six.copy_from_slice(&salt.as_bytes()[..6]);
            self = self.salted(six);
        }
        self
    }
}

/// Reads a pack's footer (its last [`FOOTER_LEN`] bytes): the trailer's
/// offset and entry count. With the pack's length, the trailer is
/// `offset .. length - FOOTER_LEN` and holds `count` entries.
///
/// # Errors
/// [`Error::Corrupt`] when the footer is malformed or does not fit `pack_len`.
pub fn read_footer(sealing: &Sealing, footer: &[u8], pack_len: u64) -> Result<(u64, u32)> {
    if footer.len() != FOOTER_LEN || &footer[48..] != PACK_END {
        return Err(corrupt("missing CAIRNEND footer"));
    }
    let offset = u64::from_le_bytes(footer[..8].try_into().expect("invariant: 8 bytes"));
    let n = u32::from_le_bytes(footer[8..12].try_into().expect("invariant: 4 bytes"));
    let fits = offset
        .checked_add(sealing.trailer_len(n))
        .and_then(|end| end.checked_add(FOOTER_LEN as u64))
        .is_some_and(|end| end == pack_len);
    if offset < HEADER_LEN as u64 || !fits {
        return Err(corrupt("trailer does not fit the pack"));
    }
    Ok((offset, n))
}

/// Parses a trailer read with [`read_footer`]'s bounds.
///
/// # Errors
/// [`Error::Corrupt`] for a malformed entry.
pub fn read_trailer(sealing: &Sealing, trailer: &[u8]) -> Result<Vec<IndexEntry>> {
    let opened;
    let trailer = match sealing.keys() {
        None => trailer,
        Some(k) => {
            opened = k
                .open(trailer, Kind::Trailer)
                .map_err(|e| corrupt(format!("trailer: {e}")))?;
            &opened[..]
        }
    };
    if !trailer.len().is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(corrupt("trailer has a partial entry"));
    }
    trailer
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|b| IndexEntry::decode(b).map_err(|e| corrupt(e.to_string())))
        .collect()
}

/// Parses a whole pack, verifying its checksum, and returns its entries.
///
/// # Errors
/// [`Error::Corrupt`] on any structural or checksum problem.
pub fn read_entries(sealing: &Sealing, pack: &[u8]) -> Result<Vec<IndexEntry>> {
    if pack.len() < HEADER_LEN + FOOTER_LEN || &pack[..8] != PACK_MAGIC {
        return Err(corrupt("missing CAIRNPAK header"));
    }
    let version = u16::from_le_bytes([pack[8], pack[9]]);
    if version != sealing.pack_version() {
        return Err(corrupt(match version {
            PACK_VERSION_SEALED => "an encrypted pack in a repository without encryption".into(),
            PACK_VERSION => "an unencrypted pack in an encrypted repository".into(),
            v => format!("unsupported pack version {v}"),
        }));
    }
    let footer = &pack[pack.len() - FOOTER_LEN..];
    if &footer[48..] != PACK_END {
        return Err(corrupt("missing CAIRNEND footer"));
    }
    let summed = &pack[..pack.len() - 40];
    if blake3::hash(summed).as_bytes() != &footer[16..48] {
        return Err(corrupt("checksum mismatch"));
    }
    let trailer_offset = usize::try_from(u64::from_le_bytes(
        footer[..8].try_into().expect("invariant: 8 bytes"),
    ))
    .map_err(|_| corrupt("trailer offset overflows"))?;
    let n = u32::from_le_bytes(footer[8..12].try_into().expect("invariant: 4 bytes")) as usize;
    let trailer_end = pack.len() - FOOTER_LEN;
    let fits = usize::try_from(sealing.trailer_len(n as u32))
        .ok()
        .and_then(|len| trailer_offset.checked_add(len))
        .is_some_and(|end| end == trailer_end);
    if trailer_offset < HEADER_LEN || !fits {
        return Err(corrupt("trailer does not fit the pack"));
    }
    let entries = read_trailer(sealing, &pack[trailer_offset..trailer_end])?;
    for e in &entries {
        // Entries decode only with offset + length in range (no overflow).
        if e.offset < HEADER_LEN as u64 || e.offset + u64::from(e.length) > trailer_offset as u64 {
            return Err(corrupt(format!("blob {} lies outside the data area", e.id)));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A share above 100 % (never valid; refused when a config is read)
    /// does not underflow: nothing is worth compressing then.
    #[test]
    fn an_impossible_saving_stores_raw() {
        let c = Compression {
            zstd_level: 3,
            min_saving_percent: 200,
        };
        let zeros = vec![0u8; 1 << 20];
        assert!(compress(&zeros, c).is_none());
        assert!(!sample_worth_compressing(&zeros[..4096], c));
    }

    /// The pack and index file vectors of docs/format.md, "Test vectors".
    #[test]
    fn format_md_vectors() {
        let mut w = PackWriter::new();
        w.push(ChunkId::of(b"hello"), b"hello", None);
        let p = w.finish();
        assert_eq!(p.bytes.len(), 126);
        assert_eq!(
            p.id.to_hex(),
            "e7c028dbbe8d8bd3cde966a21341449780d4ddccfc047201b8e26385b84bc5aa"
        );
        let expected = concat!(
            "434149524e50414b",
            "0100",
            "000000000000",
            "68656c6c6f",
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
            "1000000000000000",
            "05000000",
            "05000000",
            "00",
            "1500000000000000",
            "01000000",
            "00000000",
            "72ea97ccd05cae12a4602921cf309a5602916bf048644263e9b886f64f2ab506",
            "434149524e454e44",
        );
        assert_eq!(hex(&p.bytes), expected);

        let file = cairn_model::IndexFile {
            supersedes: Vec::new(),
            groups: vec![cairn_model::IndexGroup {
                pack: p.id,
                pack_length: p.bytes.len() as u64,
                entries: p.entries.clone(),
            }],
        };
        let bytes = file.encode();
        assert_eq!(bytes.len(), 139);
        assert_eq!(&bytes[58..107], &p.bytes[21..70], "the trailer entry");
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            "e1e32eab59e58caa3969ed4ad09155b49a9ae016cde3c783adbc335074663d23"
        );
        assert_eq!(
            hex(&bytes[107..]),
            "6d73809fa20286fab040a2696890cd7ca0216868d62fbda1d2d15fb6c51c1122"
        );
    }

    proptest! {
        #[test]
        fn pack_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..20), level in 0i32..4) {
            let c = Compression { zstd_level: level, min_saving_percent: 5 };
            let mut w = PackWriter::new();
            for raw in &chunks {
                let comp = compress(raw, c);
                w.push(ChunkId::of(raw), raw, comp.as_deref());
            }
            let p = w.finish();
            prop_assert_eq!(p.id, PackId::of(&p.bytes));
            let entries = read_entries(&Sealing::plain(), &p.bytes).expect("valid pack");
            prop_assert_eq!(&entries, &p.entries);
            for (e, raw) in entries.iter().zip(&chunks) {
                let stored = &p.bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
                prop_assert_eq!(&decode_blob(&Sealing::plain(), stored, e.id, e.codec, e.raw_length).expect("valid blob"), raw);
            }
        }
    }

    #[test]
    fn compressible_data_is_compressed_and_noise_is_not() {
        let c = Compression::default();
        assert!(compress(&vec![7u8; 10_000], c).is_some());
        let noise: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = compress(&noise, c); // may or may not pay; must not panic
    }

    #[test]
    fn a_sample_is_judged_by_the_required_saving() {
        let c = Compression::default();
        assert!(sample_worth_compressing(&[0u8; 4096], c));
        let mut noise = vec![0u8; 16_384];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        assert!(!sample_worth_compressing(&noise, c));
        // Half noise, half zeros saves about half: worth it at 10 %, not at 60 %.
        let half: Vec<u8> = noise[..8192].iter().copied().chain([0u8; 8192]).collect();
        assert!(sample_worth_compressing(&half, c));
        let strict = Compression {
            min_saving_percent: 60,
            ..c
        };
        assert!(!sample_worth_compressing(&half, strict));
        assert!(!sample_worth_compressing(
            &half,
            Compression { zstd_level: 0, ..c }
        ));
        assert!(!sample_worth_compressing(&[], c));
    }

    #[test]
    fn salting_changes_the_id_and_keeps_a_valid_pack() {
        let mut w = PackWriter::new();
        w.push(ChunkId::of(b"x"), b"x", None);
        let p = w.finish();
        let id = p.id;
        let salted = p.avoiding(&std::collections::HashSet::from([id]));
        assert_ne!(salted.id, id);
        assert_eq!(salted.id, PackId::of(&salted.bytes));
        assert_eq!(
            read_entries(&Sealing::plain(), &salted.bytes)
                .expect("valid")
                .len(),
            1
        );
    }

    #[test]
    fn tampering_is_detected() {
        let raw = vec![1u8; 5000];
        let mut w = PackWriter::new();
        w.push(
            ChunkId::of(&raw),
            &raw,
            compress(&raw, Compression::default()).as_deref(),
        );
        let p = w.finish();
        let e = p.entries[0];
        let mut bytes = p.bytes.clone();
        bytes[e.offset as usize] ^= 0xff;
        assert!(
            read_entries(&Sealing::plain(), &bytes).is_err(),
            "checksum must catch a flipped byte"
        );
        let stored = &bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
        assert!(decode_blob(&Sealing::plain(), stored, e.id, e.codec, e.raw_length).is_err());
    }

    /// An encrypted repository's pack: version 2, blobs and trailer sealed
    /// (no plaintext or plain id inside), keyed ids; it reads back only
    /// with its keys, and a flipped byte in a blob is caught by the tag.
    #[test]
    fn sealed_packs_round_trip_and_hide_their_content() {
        let keys = Arc::new(Keys::full(&cairn_crypto::MasterKey::generate()));
        let sealing = Sealing::with_keys(keys);
        let raw = b"a secret sentence, stored twice: a secret sentence".repeat(20);
        let id = sealing.ids().id(&raw);
        assert_ne!(id, ChunkId::of(&raw));
        for comp in [None, compress(&raw, Compression::default())] {
            let mut w = PackWriter::new().sealed(&sealing);
            w.push(id, &raw, comp.as_deref());
            let expected_len = w.finished_len();
            let p = w.finish();
            assert_eq!(p.bytes.len(), expected_len);
            assert_eq!(&p.bytes[8..10], &PACK_VERSION_SEALED.to_le_bytes());
            let find = |needle: &[u8]| p.bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!find(b"secret") && !find(id.as_bytes()));
            let entries = read_entries(&sealing, &p.bytes).expect("valid");
            assert_eq!(entries, p.entries);
            let e = entries[0];
            let (footer_at, n) = read_footer(
                &sealing,
                &p.bytes[p.bytes.len() - FOOTER_LEN..],
                p.bytes.len() as u64,
            )
            .expect("footer");
            assert_eq!(n, 1);
            let trailer = &p.bytes[footer_at as usize..p.bytes.len() - FOOTER_LEN];
            assert_eq!(read_trailer(&sealing, trailer).expect("trailer"), entries);
            let stored = &p.bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
            assert_eq!(
                decode_blob(&sealing, stored, e.id, e.codec, e.raw_length).expect("blob"),
                raw
            );
            assert!(read_entries(&Sealing::plain(), &p.bytes).is_err());
            let other =
                Sealing::with_keys(Arc::new(Keys::full(&cairn_crypto::MasterKey::generate())));
            assert!(read_entries(&other, &p.bytes).is_err());
            let mut bad = stored.to_vec();
            bad[30] ^= 1;
            assert!(decode_blob(&sealing, &bad, e.id, e.codec, e.raw_length).is_err());
        }
    }

    /// A pack a write-only key wrote: the full key reads its trailer and
    /// blobs, the writer reads neither; a blob copied as stored into a
    /// pack of another key pair (a repack) still opens.
    #[test]
    fn write_only_packs_open_with_the_full_key_and_survive_a_repack() {
        let master = cairn_crypto::MasterKey::generate();
        let full = Sealing::with_keys(Arc::new(Keys::full(&master)));
        let writer = Sealing::with_keys(Arc::new(Keys::new(
            &cairn_crypto::KeyMaterial::WriteOnly(master.write_only()),
            cairn_crypto::Cipher::default(),
        )));
        let raw = b"written by an agent".repeat(30);
        let id = writer.ids().id(&raw);
        assert_eq!(id, full.ids().id(&raw), "one id key");
        let mut w = PackWriter::new().sealed(&writer);
        w.push(id, &raw, compress(&raw, Compression::default()).as_deref());
        let p = w.finish();
        assert!(read_entries(&writer, &p.bytes).is_err());
        let e = read_entries(&full, &p.bytes).expect("the full key reads it")[0];
        let stored = &p.bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
        assert!(decode_blob(&writer, stored, e.id, e.codec, e.raw_length).is_err());
        assert_eq!(
            decode_blob(&full, stored, e.id, e.codec, e.raw_length).expect("blob"),
            raw
        );
        let mut again = PackWriter::new().sealed(&full);
        again.push_stored(e.id, stored, e.raw_length, e.codec);
        let q = again.finish();
        let f = read_entries(&full, &q.bytes).expect("repacked")[0];
        let moved = &q.bytes[f.offset as usize..(f.offset + u64::from(f.length)) as usize];
        assert_eq!(
            decode_blob(&full, moved, f.id, f.codec, f.raw_length).expect("blob"),
            raw
        );
    }
}
