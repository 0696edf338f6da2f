//! The repository configuration stored as `config` at the repository root.

use serde::{Deserialize, Serialize};

use crate::RepoId;

/// The repository format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

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
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::with_average(64 * 1024)
    }
}

impl ChunkerParams {
    /// Parameters centred on `avg`: min = avg/4, max = avg*4, level 1.
    #[must_use]
    pub fn with_average(avg: u32) -> Self {
        Self {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 4,
            normalization: 1,
            tar_aware: true,
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

impl Default for Compression {
    fn default() -> Self {
        Self {
            zstd_level: 1,
            min_saving_percent: 10,
        }
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
    /// When the repository was created (RFC 3339).
    pub created: String,
}
