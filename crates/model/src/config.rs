//! The repository configuration stored as `config` at the repository root.

use serde::{Deserialize, Serialize};

use crate::RepoId;

/// The repository format this build writes and the newest it reads.
/// Version 2 added per-kind chunk sizes for tar members
/// ([`ChunkerParams::members`]); everything else reads as in version 1.
/// Version 3 is an encrypted repository ([`RepoConfig::encryption`]).
pub const FORMAT_VERSION: u32 = 3;

/// The format version of encrypted repositories.
pub const ENCRYPTED_VERSION: u32 = 3;

/// How an encrypted repository is encrypted (`config.encryption`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// The AEAD of what is sealed to the repository key (blobs, trailers,
    /// manifests, run records): `"aes-256-gcm"` (new repositories) or
    /// `"xchacha20-poly1305"` (repositories made before it). What is sealed
    /// with the index key and key objects are XChaCha20-Poly1305 in both.
    pub cipher: String,
    /// `"blake3-keyed"`: chunk ids are BLAKE3 keyed with the id key.
    pub chunk_ids: String,
    /// `"x25519"`: blobs, trailers, manifests and run records are sealed to
    /// the repository's X25519 public key (one-time key pairs), so that
    /// write-only keys can add them without reading any.
    pub key_agreement: String,
}

/// The ciphers an encrypted repository may name.
pub const ENCRYPTION_CIPHERS: [&str; 2] = ["aes-256-gcm", "xchacha20-poly1305"];

impl Default for Encryption {
    fn default() -> Self {
        Self {
            cipher: "aes-256-gcm".into(),
            chunk_ids: "blake3-keyed".into(),
            key_agreement: "x25519".into(),
        }
    }
}

/// Average chunk size for vector storage data in new repositories.
pub const DEFAULT_VECTOR_AVG: u32 = 4096;

/// FastCDC 2020 parameters. Chunk boundaries depend on every field, so they
/// are fixed at `init` and recorded in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Smallest chunk, except the last chunk of a file.
    pub min_size: u32,
    /// Target average chunk size; a power of two.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
    /// FastCDC normalization level (0 to 3).
    pub normalization: u8,
    /// Also cut at tar member boundaries (headers and data starts, nested
    /// tars included), so each member of a Qdrant snapshot is chunked on its own.
    #[serde(default)]
    pub tar_aware: bool,
    /// Other chunk sizes for some kinds of tar member (tar-aware chunking
    /// only); members of other kinds use the sizes above.
    #[serde(default, skip_serializing_if = "MemberSizes::is_empty")]
    pub members: MemberSizes,
}

/// Chunk size bounds for one kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkSizes {
    /// Smallest chunk, except the last of a member.
    pub min_size: u32,
    /// Target average; a power of two.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl ChunkSizes {
    /// Sizes centred on `avg`: min = avg/4, max = avg*4.
    #[must_use]
    pub fn with_average(avg: u32) -> Self {
        Self {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 4,
        }
    }
}

/// Chunk sizes by kind of Qdrant snapshot member (see format.md, "Member
/// kinds"). A kind left out is chunked with the repository's default sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSizes {
    /// Vector storage data (`vector_storage*/**/chunk_N.mmap`, `matrix.dat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<ChunkSizes>,
    /// Payload storage pages (`payload_storage/page_N.dat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<ChunkSizes>,
    /// Write-ahead log segments (`wal/open-N`, `wal/closed-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<ChunkSizes>,
}

impl MemberSizes {
    /// True when every kind uses the default sizes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::with_average(64 * 1024)
    }
}

impl ChunkerParams {
    /// Parameters centred on `avg`: min = avg/4, max = avg*4, level 1,
    /// tar-aware, with vector data chunked around [`DEFAULT_VECTOR_AVG`].
    #[must_use]
    pub fn with_average(avg: u32) -> Self {
        let sizes = ChunkSizes::with_average(avg);
        Self {
            min_size: sizes.min_size,
            avg_size: sizes.avg_size,
            max_size: sizes.max_size,
            normalization: 1,
            tar_aware: true,
            members: MemberSizes {
                vectors: Some(ChunkSizes::with_average(DEFAULT_VECTOR_AVG)),
                payload: None,
                wal: None,
            },
        }
    }

    /// The format version a repository with these parameters needs: 2 when
    /// a member kind has sizes of its own, else 1.
    #[must_use]
    pub fn format_version(&self) -> u32 {
        if self.tar_aware && !self.members.is_empty() {
            2
        } else {
            1
        }
    }

    /// These parameters with a member kind's `sizes` in place of their own.
    #[must_use]
    pub fn for_sizes(&self, sizes: ChunkSizes) -> Self {
        Self {
            min_size: sizes.min_size,
            avg_size: sizes.avg_size,
            max_size: sizes.max_size,
            members: MemberSizes::default(),
            ..*self
        }
    }

    /// Checks the bounds FastCDC accepts.
    ///
    /// # Errors
    /// A message naming the first parameter out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(64..=1_048_576).contains(&self.min_size) {
            return Err(format!(
                "min chunk size {} is outside 64..=1MiB",
                self.min_size
            ));
        }
        if !(256..=4_194_304).contains(&self.avg_size) || !self.avg_size.is_power_of_two() {
            return Err(format!(
                "average chunk size {} must be a power of two in 256..=4MiB",
                self.avg_size
            ));
        }
        if !(1024..=16_777_216).contains(&self.max_size) {
            return Err(format!(
                "max chunk size {} is outside 1KiB..=16MiB",
                self.max_size
            ));
        }
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return Err("chunk sizes must satisfy min <= avg <= max".into());
        }
        if self.normalization > 3 {
            return Err("normalization level must be 0..=3".into());
        }
        let MemberSizes {
            vectors,
            payload,
            wal,
        } = self.members;
        for (kind, sizes) in [("vectors", vectors), ("payload", payload), ("wal", wal)] {
            if let Some(s) = sizes {
                self.for_sizes(s)
                    .validate()
                    .map_err(|e| format!("{kind} members: {e}"))?;
            }
        }
        Ok(())
    }
}

/// How chunk data is compressed inside packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level; 0 disables compression.
    pub zstd_level: i32,
    /// A chunk is stored compressed only when that saves at least this
    /// percentage of its size; otherwise it is stored raw and restores faster.
    pub min_saving_percent: u8,
}

/// zstd's levels: negative ones are its fast modes, 22 its strongest.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -131_072..=22;

/// Pack sizes a repository may have.
pub const PACK_SIZES: std::ops::RangeInclusive<u64> = 1024 * 1024..=1024 * 1024 * 1024;

impl Compression {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !ZSTD_LEVELS.contains(&self.zstd_level) {
            return Err(format!(
                "zstd level {} is outside {}..={}",
                self.zstd_level,
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            ));
        }
        if self.min_saving_percent > 100 {
            return Err(format!(
                "min_saving_percent {} is above 100",
                self.min_saving_percent
            ));
        }
        Ok(())
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            zstd_level: 1,
            min_saving_percent: 10,
        }
    }
}

impl RepoConfig {
    /// Checks every setting (chunker, compression, pack size); readers
    /// refuse a config that fails.
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        self.compression.validate()?;
        if let Some(l) = &self.object_lock {
            l.validate()?;
        }
        if let Some(e) = &self.encryption {
            let known = Encryption {
                cipher: e.cipher.clone(),
                ..Encryption::default()
            };
            if *e != known || !ENCRYPTION_CIPHERS.contains(&e.cipher.as_str()) {
                return Err(format!(
                    "encryption {}/{}/{} is not one this release knows ({}/blake3-keyed/x25519)",
                    e.cipher,
                    e.chunk_ids,
                    e.key_agreement,
                    ENCRYPTION_CIPHERS.join(" or ")
                ));
            }
            if self.version < ENCRYPTED_VERSION {
                return Err(format!(
                    "version {} cannot be encrypted (format version {ENCRYPTED_VERSION})",
                    self.version
                ));
            }
        } else if self.version >= ENCRYPTED_VERSION {
            return Err(format!(
                "version {} needs an encryption field",
                self.version
            ));
        }
        if !PACK_SIZES.contains(&self.pack_size) {
            return Err(format!(
                "pack size {} is outside 1 MiB..=1 GiB",
                self.pack_size
            ));
        }
        Ok(())
    }
}

/// The `config` file: everything needed to read and extend the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Repository format version; readers refuse newer versions.
    pub version: u32,
    /// Random id, the key of the local index cache.
    pub id: RepoId,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Compression settings.
    pub compression: Compression,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// When the repository was created (written `2026-11-25T04:00:00+00:00`).
    #[serde(with = "crate::time::offset")]
    pub created: crate::Time,
    /// Present in an encrypted repository (version 3): its data is sealed
    /// with a master key that `keys/` objects wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Present when packs and manifests are kept under S3 Object Lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// How a repository keeps its packs and manifests under S3 Object Lock
/// (`config.object_lock`): each is locked as it is written, for `days`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// `"governance"` or `"compliance"`.
    pub mode: String,
    /// Days a new pack or manifest is locked (1 to 36,500).
    pub days: u32,
}

impl ObjectLock {
    /// Checks the mode and the days.
    ///
    /// # Errors
    /// A message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !["governance", "compliance"].contains(&self.mode.as_str()) {
            return Err(format!(
                "object lock mode {:?} is neither governance nor compliance",
                self.mode
            ));
        }
        if !(1..=36_500).contains(&self.days) {
            return Err(format!(
                "object lock of {} days is outside 1..=36500",
                self.days
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u32, encryption: Option<Encryption>) -> RepoConfig {
        RepoConfig {
            version,
            id: crate::RepoId([7; 32]),
            chunker: ChunkerParams::default(),
            compression: Compression::default(),
            pack_size: 32 << 20,
            created: chrono::DateTime::from_timestamp(0, 0).expect("epoch"),
            encryption,
            object_lock: None,
        }
    }

    /// Version 3 exactly when encrypted, with a cipher and id scheme
    /// defined; anything else is refused, naming why.
    #[test]
    fn encryption_and_version_go_together() {
        assert!(config(3, Some(Encryption::default())).validate().is_ok());
        let earlier = Encryption {
            cipher: "xchacha20-poly1305".into(),
            ..Encryption::default()
        };
        assert!(config(3, Some(earlier)).validate().is_ok());
        assert!(config(2, None).validate().is_ok());
        let e = config(2, Some(Encryption::default()))
            .validate()
            .unwrap_err();
        assert!(e.contains("cannot be encrypted"), "{e}");
        let e = config(3, None).validate().unwrap_err();
        assert!(e.contains("needs an encryption field"), "{e}");
        let other = Encryption {
            cipher: "rot13".into(),
            ..Encryption::default()
        };
        let e = config(3, Some(other)).validate().unwrap_err();
        assert!(e.contains("rot13"), "{e}");
        // The field round-trips and is left out when absent.
        let json = serde_json::to_string(&config(2, None)).expect("json");
        assert!(!json.contains("encryption"));
        let c = config(3, Some(Encryption::default()));
        let back: RepoConfig =
            serde_json::from_str(&serde_json::to_string(&c).expect("json")).expect("parses");
        assert_eq!(back, c);
    }
}
