//! The engine's error type.

use std::path::PathBuf;

/// Engine errors. Each carries what a user needs to act: the path, snapshot,
/// file or pack concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository config at the location.
    #[error("{location} is not a Cairn repository (no config); run `cairn init` first")]
    NotARepository {
        /// The location.
        location: String,
    },
    /// `init` on a location that already has a repository.
    #[error("{location} already holds a Cairn repository")]
    AlreadyInitialized {
        /// The location.
        location: String,
    },
    /// The repository was written by a newer Cairn.
    #[error("repository format version {found} is newer than this build supports ({supported}); upgrade cairn")]
    NewerFormat {
        /// Version in the config.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The repository is encrypted and no password was given.
    #[error("{location} is encrypted: give its password with CAIRN_PASSWORD, --password-file or --password-command")]
    PasswordRequired {
        /// The repository.
        location: String,
    },
    /// No key object of the repository opens with the password given.
    #[error("wrong password for {location}: no key of the repository opens with it")]
    WrongPassword {
        /// The repository.
        location: String,
    },
    /// The repository was opened with a write-only key and the command
    /// needs to read backups.
    #[error("the key in use is write-only: it adds backups to {location} but cannot {action}; give a full key's password")]
    WriteOnlyKey {
        /// The repository.
        location: String,
        /// What was refused.
        action: String,
    },
    /// A key operation that cannot be done (the last key, an unknown key,
    /// a repository without encryption).
    #[error("{0}")]
    Key(String),
    /// A repository file could not be decoded.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// Stored data failed verification during a restore.
    #[error("snapshot {snapshot}, file {file}: pack {pack} is corrupt: {reason}")]
    Corrupt {
        /// Snapshot id.
        snapshot: String,
        /// File path in the snapshot.
        file: String,
        /// Pack id.
        pack: String,
        /// What failed.
        reason: String,
    },
    /// A chunk named by a snapshot is in no index file.
    #[error("snapshot {snapshot}, file {file}: chunk {chunk} is missing from the repository")]
    MissingChunk {
        /// Snapshot id.
        snapshot: String,
        /// File path.
        file: String,
        /// Chunk id.
        chunk: String,
    },
    /// No snapshot matches.
    #[error("no snapshot matches {spec:?}")]
    SnapshotNotFound {
        /// What was asked for.
        spec: String,
    },
    /// `latest` was asked for, and the repository holds snapshots, but none
    /// of the kind asked for.
    #[error("\"latest\": there is {none}; the repository holds {others} other snapshot(s) (`cairn snapshots` lists them)")]
    NoLatest {
        /// What is missing ("no complete cluster backup", …).
        none: String,
        /// Snapshots the repository holds.
        others: usize,
    },
    /// A forget was given neither snapshot ids nor a retention rule.
    #[error("nothing to forget: give snapshot ids or at least one retention rule")]
    NothingToForget,
    /// A retention policy would remove every snapshot of a group (a source
    /// left with no backup at all); nothing was removed.
    #[error("the policy keeps no snapshot at all of {groups}; nothing was removed")]
    KeepsNothing {
        /// The groups it would empty.
        groups: String,
    },
    /// More than one snapshot matches an id prefix.
    #[error("{spec:?} matches more than one snapshot; give more digits")]
    AmbiguousSnapshot {
        /// What was asked for.
        spec: String,
    },
    /// A path filter matched no file.
    #[error("no file in snapshot {snapshot} matches {filter:?}")]
    NoMatchingFiles {
        /// Snapshot id.
        snapshot: String,
        /// The filter.
        filter: String,
    },
    /// A bad option value.
    #[error("{0}")]
    InvalidArgument(String),
    /// Local file I/O.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An input other than a local file could not be read.
    #[error("{what}: {reason}")]
    Source {
        /// The input ("collection docs, shard 2 from http://…").
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A failure of something outside the repository that an input or a
    /// caller's seam reported (a Qdrant node refusing, say), kept whole so a
    /// front end can tell what it was; `retry` says whether reading the
    /// input again may succeed.
    #[error("{source}")]
    External {
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
        /// Reading the input again may succeed.
        retry: bool,
    },
    /// A prune found snapshots it cannot read completely, so it deletes nothing.
    #[error("prune deletes nothing: {0}")]
    PruneRefused(String),
    /// Packs a backup deduplicated against were deleted while it ran.
    #[error("{count} pack(s) this backup reused disappeared while it ran ({packs}), so no snapshot was written; they are dropped from the local cache and the next backup stores their chunks again")]
    PacksVanished {
        /// How many.
        count: usize,
        /// Their short ids.
        packs: String,
    },
    /// This process could not renew its lease in time (it stalled, or the
    /// storage was unreachable), so a prune may have counted it as gone.
    #[error("this process's lease went unrenewed for more than half its {secs}s, so a prune may have counted it as gone: no snapshot was written (data already uploaded is kept and reused by the next backup)")]
    LeaseLapsed {
        /// The lease duration.
        secs: u64,
    },
    /// Another process holds what this one needs (a prune lease).
    #[error("{0}")]
    Busy(String),
    /// `latest` matched snapshots of several sources.
    #[error("\"latest\" is ambiguous: the repository holds backups of {count} sources:\n{sources}\nchoose one source, or give a snapshot id")]
    AmbiguousLatest {
        /// How many sources.
        count: usize,
        /// One line per source.
        sources: String,
    },
    /// The operation was cancelled (Ctrl-C); what was uploaded is kept.
    #[error("interrupted; data uploaded so far is kept and will be reused by the next backup")]
    Interrupted,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// Local chunk index failure.
    #[error(transparent)]
    Index(#[from] cairn_index::Error),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when reading an input again from the start may succeed: a
    /// stream that broke, a node that timed out or answered 5xx.
    #[must_use]
    pub(crate) fn is_worth_reading_again(&self) -> bool {
        match self {
            Self::Source { .. } => true,
            Self::External { retry, .. } => *retry,
            _ => false,
        }
    }

    /// True when retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}

/// A storage error, except that an object of an encrypted repository that
/// does not decrypt is [`Error::Malformed`] (`what` names it): readers skip
/// or refuse it as they do any damaged object of its kind.
pub(crate) fn damaged(e: cairn_store::Error, what: impl FnOnce() -> String) -> Error {
    match e {
        cairn_store::Error::Undecryptable { reason, .. } => Error::Malformed {
            what: what(),
            reason,
        },
        other => other.into(),
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
