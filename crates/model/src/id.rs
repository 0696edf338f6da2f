//! Typed 32-byte identifiers. A `ChunkId` can never be passed where a `PackId`
//! is expected, although both are BLAKE3 digests.

use std::fmt;
use std::str::FromStr;

/// An identifier string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected 64 hex digits")]
pub struct IdParseError(pub String);

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The BLAKE3 digest of `data`.
            #[must_use]
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            /// The id as lowercase hex.
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, for display.
            #[must_use]
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The raw bytes.
            #[must_use]
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Reads an id from the first 32 bytes of `b`.
            ///
            /// # Panics
            /// If `b` is shorter than 32 bytes.
            #[must_use]
            pub fn from_slice(b: &[u8]) -> Self {
                let mut a = [0u8; 32];
                a.copy_from_slice(&b[..32]);
                Self(a)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut a = [0u8; 32];
                hex::decode_to_slice(s, &mut a).map_err(|_| IdParseError(s.to_string()))?;
                Ok(Self(a))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// BLAKE3 of a chunk's uncompressed bytes.
    ChunkId
);
define_id!(
    /// BLAKE3 of a whole pack file.
    PackId
);
define_id!(
    /// BLAKE3 of a snapshot manifest's uncompressed JSON.
    SnapshotId
);
define_id!(
    /// Random identifier chosen at `init`; names the local cache.
    RepoId
);
define_id!(
    /// BLAKE3 of a whole index file: its name under `index/`.
    IndexId
);

/// How chunk ids are computed: plain BLAKE3, or, in an encrypted
/// repository, BLAKE3 keyed with the repository's id key, so that a stored
/// id says nothing about the content to anyone without the key.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkHasher(Option<[u8; 32]>);

impl fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ChunkHasher(keyed)"
        } else {
            "ChunkHasher(plain)"
        })
    }
}

impl ChunkHasher {
    /// Plain BLAKE3 (unencrypted repositories).
    pub const PLAIN: Self = Self(None);

    /// BLAKE3 keyed with `key`.
    #[must_use]
    pub fn keyed(key: [u8; 32]) -> Self {
        Self(Some(key))
    }

    /// The key, when keyed.
    #[must_use]
    pub fn key(&self) -> Option<&[u8; 32]> {
        self.0.as_ref()
    }

    /// The id of a chunk (or chunk-list blob) holding `data`.
    #[must_use]
    pub fn id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*self.hash(data).as_bytes())
    }

    /// The digest of `data` in this mode.
    #[must_use]
    pub fn hash(&self, data: &[u8]) -> blake3::Hash {
        match &self.0 {
            None => blake3::hash(data),
            Some(k) => blake3::keyed_hash(k, data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let back: ChunkId = id.to_hex().parse().expect("parses");
        assert_eq!(id, back);
        assert!("xyz".parse::<ChunkId>().is_err());
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
    }
}
