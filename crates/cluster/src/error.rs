//! What can go wrong backing up or restoring a live cluster: the engine's
//! errors, the Qdrant client's, and the cluster's own refusals. Errors say
//! what happened; which flag to use is the front end's business (a
//! [`Remedy`] names the option in its own terms).

/// Errors of cluster backups and restores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository's side (storage, chunks, snapshots, arguments).
    #[error(transparent)]
    Engine(#[from] cairn_engine::Error),
    /// A Qdrant request failed.
    #[error(transparent)]
    Qdrant(#[from] cairn_qdrant::Error),
    /// Shards of a cluster backup could not be read; no snapshot was written.
    #[error("{count} shard(s) could not be read, so no snapshot was written (data already uploaded is kept and reused; a partial backup can be recorded instead):\n{details}")]
    ShardsFailed {
        /// How many.
        count: usize,
        /// One line per shard: collection, shard, node and error.
        details: String,
    },
    /// A restore into Qdrant was refused before anything was changed.
    #[error("refusing to restore: {why}")]
    Refused {
        /// What was found.
        why: String,
        /// What the operator can do about it.
        remedy: Option<Remedy>,
    },
    /// A restore into Qdrant did not produce what the backup holds.
    #[error("restore verification failed: {0}")]
    Verification(String),
    /// A restore drill could not be set up (its own Qdrant did not start).
    #[error("drill: {0}")]
    Drill(String),
}

/// What an operator can do about a refused restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Go on anyway (the restore was refused only to protect something).
    Force,
    /// Restore `collection` under another name, or drop and re-create the
    /// existing one.
    RenameOrForce {
        /// The backed-up collection.
        collection: String,
    },
    /// Restore `collection` under another name.
    Rename {
        /// The backed-up collection.
        collection: String,
    },
    /// Name every node of the target cluster.
    AllNodes,
    /// Restore other collections, or the files to a directory.
    SelectCollections,
}

impl Error {
    /// A refusal with no remedy beyond what `why` says.
    pub(crate) fn refused(why: impl Into<String>) -> Self {
        Self::Refused {
            why: why.into(),
            remedy: None,
        }
    }

    /// A refusal and what to do about it.
    pub(crate) fn refused_unless(why: impl Into<String>, remedy: Remedy) -> Self {
        Self::Refused {
            why: why.into(),
            remedy: Some(remedy),
        }
    }

    /// An engine error for what an input reports through the engine's seams:
    /// the engine's own errors as they are; a Qdrant failure kept whole, to
    /// be read again when the client says a retry may succeed.
    pub(crate) fn into_engine(self) -> cairn_engine::Error {
        match self {
            Self::Engine(e) => e,
            Self::Qdrant(e) => {
                let retry = e.is_retryable();
                cairn_engine::Error::External {
                    source: Box::new(e),
                    retry,
                }
            }
            other => cairn_engine::Error::External {
                source: Box::new(other),
                retry: false,
            },
        }
    }

    /// The engine error inside, if this is one.
    #[must_use]
    pub fn engine(&self) -> Option<&cairn_engine::Error> {
        match self {
            Self::Engine(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
