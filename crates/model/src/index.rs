//! Where chunks live: the binary entry shared by pack trailers, index files
//! and the local chunk index.

use crate::{ChunkId, Error, IndexId, PackId, Result};

/// How a blob's bytes are stored. Discriminants are on-disk values and are
/// never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    /// Decodes the on-disk byte.
    ///
    /// # Errors
    /// An unknown codec byte.
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Self::Raw),
            1 => Ok(Self::Zstd),
            other => Err(Error::Malformed {
                kind: "index entry",
                reason: format!("unknown codec {other}"),
            }),
        }
    }
}

/// Size of an encoded [`IndexEntry`].
pub const INDEX_ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1;

/// Largest stored or raw length of one blob. Chunks are at most 16 MiB (the
/// chunker's bound) and chunk lists 128 KiB; anything larger in an index
/// entry is corruption, refused before any buffer is sized from it.
pub const MAX_BLOB_LEN: u32 = 32 * 1024 * 1024;

/// One blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The chunk.
    pub id: ChunkId,
    /// Byte offset of the stored blob in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u32,
    /// Uncompressed length.
    pub raw_length: u32,
    /// Storage codec.
    pub codec: Codec,
}

impl IndexEntry {
    /// Appends the 49-byte little-endian encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
        out.push(self.codec as u8);
    }

    /// Decodes one entry from exactly [`INDEX_ENTRY_LEN`] bytes.
    ///
    /// # Errors
    /// Wrong length or unknown codec.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != INDEX_ENTRY_LEN {
            return Err(Error::Malformed {
                kind: "index entry",
                reason: format!("{} bytes, expected {INDEX_ENTRY_LEN}", b.len()),
            });
        }
        let e = Self {
            id: ChunkId::from_slice(&b[..32]),
            offset: u64::from_le_bytes(b[32..40].try_into().expect("invariant: 8 bytes")),
            length: u32::from_le_bytes(b[40..44].try_into().expect("invariant: 4 bytes")),
            raw_length: u32::from_le_bytes(b[44..48].try_into().expect("invariant: 4 bytes")),
            codec: Codec::from_u8(b[48])?,
        };
        let bad = |reason: String| Error::Malformed {
            kind: "index entry",
            reason,
        };
        if e.length > MAX_BLOB_LEN || e.raw_length > MAX_BLOB_LEN {
            return Err(bad(format!(
                "chunk {} claims {} stored / {} raw bytes, more than the {MAX_BLOB_LEN} a blob may have",
                e.id.short(),
                e.length,
                e.raw_length
            )));
        }
        if e.offset.checked_add(u64::from(e.length)).is_none() {
            return Err(bad(format!(
                "chunk {} lies past the largest offset",
                e.id.short()
            )));
        }
        Ok(e)
    }

    /// The location of this entry in `pack`.
    #[must_use]
    pub fn locate(&self, pack: PackId) -> PackLocation {
        PackLocation {
            pack,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
            codec: self.codec,
        }
    }
}

/// Where a chunk can be read: the local index's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLocation {
    /// The pack holding the chunk.
    pub pack: PackId,
    /// Offset of the stored blob.
    pub offset: u64,
    /// Stored length.
    pub length: u32,
    /// Uncompressed length.
    pub raw_length: u32,
    /// Storage codec.
    pub codec: Codec,
}

impl PackLocation {
    /// Size of the encoding.
    pub const LEN: usize = 32 + 8 + 4 + 4 + 1;

    /// Encodes as pack id followed by the entry fields.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(self.pack.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
        out.push(self.codec as u8);
        out
    }

    /// Decodes [`PackLocation::encode`] output.
    ///
    /// # Errors
    /// Wrong length or unknown codec.
    pub fn decode(b: &[u8]) -> Result<Self> {
        // Same layout as an index entry with the pack id in the id's place.
        let e = IndexEntry::decode(b)?;
        Ok(e.locate(PackId(e.id.0)))
    }
}

/// The entries of one pack inside an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexGroup {
    /// The pack.
    pub pack: PackId,
    /// Total pack length in bytes.
    pub pack_length: u64,
    /// Its blobs.
    pub entries: Vec<IndexEntry>,
}

/// An index file (`index/<blake3 of its bytes>`): which chunks live in which
/// packs, and which older index files it replaces. Binary: magic
/// `CAIRNIDX`, u16 version; version 2 only: u32 count and that many 32-byte
/// names of superseded index files; u32 group count, groups (pack id, u64
/// pack length, u32 entry count, entries), then a BLAKE3 of all preceding
/// bytes. Files that supersede nothing are written as version 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files (names) this one replaces: every entry of theirs that is
    /// still needed is in this file or in another file that is not superseded.
    pub supersedes: Vec<IndexId>,
    /// One group per pack.
    pub groups: Vec<IndexGroup>,
}

const INDEX_MAGIC: &[u8; 8] = b"CAIRNIDX";
const INDEX_VERSION: u16 = 1;
const INDEX_VERSION_SUPERSEDING: u16 = 2;

impl IndexFile {
    /// Serializes the index file.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(INDEX_MAGIC);
        if self.supersedes.is_empty() {
            out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        } else {
            out.extend_from_slice(&INDEX_VERSION_SUPERSEDING.to_le_bytes());
            out.extend_from_slice(
                &u32::try_from(self.supersedes.len())
                    .expect("invariant: < 4G files")
                    .to_le_bytes(),
            );
            for id in &self.supersedes {
                out.extend_from_slice(&id.0);
            }
        }
        out.extend_from_slice(
            &u32::try_from(self.groups.len())
                .expect("invariant: < 4G packs")
                .to_le_bytes(),
        );
        for g in &self.groups {
            out.extend_from_slice(g.pack.as_bytes());
            out.extend_from_slice(&g.pack_length.to_le_bytes());
            out.extend_from_slice(
                &u32::try_from(g.entries.len())
                    .expect("invariant: < 4G entries")
                    .to_le_bytes(),
            );
            for e in &g.entries {
                e.encode(&mut out);
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and verifies an index file.
    ///
    /// # Errors
    /// Bad magic, version, checksum or truncated data.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::Malformed {
            kind: "index file",
            reason,
        };
        if b.len() < 8 + 2 + 4 + 32 || &b[..8] != INDEX_MAGIC {
            return Err(bad("missing CAIRNIDX header".into()));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum mismatch".into()));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != INDEX_VERSION && version != INDEX_VERSION_SUPERSEDING {
            return Err(bad(format!("unsupported index version {version}")));
        }
        let mut pos = 10;
        let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
            let s = pos
                .checked_add(n)
                .and_then(|end| body.get(*pos..end))
                .ok_or_else(|| bad("truncated".into()))?;
            *pos += n;
            Ok(s)
        };
        let mut supersedes = Vec::new();
        if version == INDEX_VERSION_SUPERSEDING {
            let n = u32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("invariant: 4 bytes"));
            for _ in 0..n {
                supersedes.push(IndexId(
                    take(&mut pos, 32)?.try_into().expect("invariant: 32 bytes"),
                ));
            }
        }
        let count = u32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("invariant: 4 bytes"));
        let mut groups = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let pack = PackId::from_slice(take(&mut pos, 32)?);
            let pack_length =
                u64::from_le_bytes(take(&mut pos, 8)?.try_into().expect("invariant: 8 bytes"));
            let n = u32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("invariant: 4 bytes"));
            let mut entries = Vec::with_capacity(n.min(1 << 20) as usize);
            for _ in 0..n {
                entries.push(IndexEntry::decode(take(&mut pos, INDEX_ENTRY_LEN)?)?);
            }
            groups.push(IndexGroup {
                pack,
                pack_length,
                entries,
            });
        }
        if pos != body.len() {
            return Err(bad("trailing bytes".into()));
        }
        Ok(Self { supersedes, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_file_round_trip_and_tamper() {
        let entry = IndexEntry {
            id: ChunkId::of(b"a"),
            offset: 16,
            length: 10,
            raw_length: 20,
            codec: Codec::Zstd,
        };
        let f = IndexFile {
            supersedes: Vec::new(),
            groups: vec![IndexGroup {
                pack: PackId::of(b"p"),
                pack_length: 100,
                entries: vec![entry],
            }],
        };
        let mut bytes = f.encode();
        assert_eq!(IndexFile::decode(&bytes).expect("decodes"), f);
        assert_eq!(
            &bytes[8..10],
            &1u16.to_le_bytes(),
            "nothing superseded: version 1"
        );
        let superseding = IndexFile {
            supersedes: vec![IndexId([0xab; 32]), IndexId([0xcd; 32])],
            ..f.clone()
        };
        let encoded = superseding.encode();
        assert_eq!(&encoded[8..10], &2u16.to_le_bytes());
        assert_eq!(IndexFile::decode(&encoded).expect("decodes"), superseding);
        bytes[20] ^= 1;
        assert!(IndexFile::decode(&bytes).is_err());

        // Crafted lengths and offsets are refused, not trusted.
        for (offset, length, raw) in [(0, MAX_BLOB_LEN + 1, 1), (0, 1, u32::MAX), (u64::MAX, 2, 2)]
        {
            let mut b = Vec::new();
            IndexEntry {
                offset,
                length,
                raw_length: raw,
                ..entry
            }
            .encode(&mut b);
            assert!(IndexEntry::decode(&b).is_err(), "{offset} {length} {raw}");
        }
        let loc = entry.locate(PackId::of(b"p"));
        assert_eq!(PackLocation::decode(&loc.encode()).expect("decodes"), loc);
    }
}
