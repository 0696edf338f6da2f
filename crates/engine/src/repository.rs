//! The repository façade: init/open, the local chunk index cache, snapshots.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_index::ChunkIndex;
use cairn_model::{
    ChunkerParams, Compression, IndexFile, IndexId, RepoConfig, RepoId, Snapshot, SnapshotId,
    FORMAT_VERSION,
};
use cairn_store::{keys, RepoStore};
use futures::StreamExt;

use crate::error::{Error, Result};

/// How long a lease (a running writer's marker, see [`crate::lease`]) lasts
/// unless renewed.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Options for creating a repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker parameters (fixed for the repository's life).
    pub chunker: ChunkerParams,
    /// Compression settings.
    pub compression: Compression,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// The repository id (it names the local cache directory); random when
    /// `None`. Fixed only to rebuild a repository byte for byte (the test
    /// vectors).
    pub id: Option<[u8; 32]>,
    /// The creation time recorded in the config; now when `None`.
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    /// Encrypt the repository, with a first key that this password opens;
    /// `None` leaves it unencrypted.
    pub encryption: Option<NewKey>,
    /// The AEAD of what is sealed to the repository key (when encrypted).
    pub cipher: cairn_crypto::Cipher,
    /// Keep packs and manifests under S3 Object Lock (an S3 bucket with
    /// Object Lock enabled).
    pub object_lock: Option<cairn_model::ObjectLock>,
}

/// A key to add to an encrypted repository: the password that will open
/// it, its Argon2id cost, and a label.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The password.
    pub password: cairn_crypto::Password,
    /// Argon2id cost.
    pub kdf: cairn_crypto::KdfParams,
    /// A label to tell keys apart (`key list`).
    pub label: String,
    /// What the key grants.
    pub access: cairn_crypto::Access,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            compression: Compression::default(),
            pack_size: 32 * 1024 * 1024,
            id: None,
            created: None,
            encryption: None,
            cipher: cairn_crypto::Cipher::default(),
            object_lock: None,
        }
    }
}

/// What `init` created (`init --json` prints exactly this): the location and
/// the config written there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InitSummary {
    /// The repository location.
    pub repository: String,
    /// The config (format version, id, chunker, compression, pack size,
    /// creation time).
    #[serde(flatten)]
    pub config: RepoConfig,
}

/// A snapshot's id and manifest.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// Id (BLAKE3 of the manifest JSON).
    pub id: SnapshotId,
    /// The manifest.
    pub snapshot: Snapshot,
    /// Stored size of the manifest object.
    pub manifest_size: u64,
}

/// Which snapshots `latest` may resolve to. An explicit id ignores it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of this source ([`Snapshot::source_key`]).
    pub source: Option<String>,
    /// Only backups of a Qdrant cluster.
    pub cluster: bool,
    /// Only cluster backups holding every one of these collections complete.
    pub collections: Vec<String>,
}

impl SnapshotFilter {
    /// True when `s` passes.
    #[must_use]
    pub fn matches(&self, s: &Snapshot) -> bool {
        if self
            .source
            .as_deref()
            .is_some_and(|src| src != s.source_key())
        {
            return false;
        }
        if (self.cluster || !self.collections.is_empty()) && s.qdrant.is_none() {
            return false;
        }
        let Some(rec) = &s.qdrant else { return true };
        if self.collections.is_empty() {
            // A whole-cluster restore needs every collection complete.
            return !self.cluster || !rec.partial;
        }
        self.collections.iter().all(|c| {
            rec.collections
                .iter()
                .any(|r| &r.name == c && r.is_complete())
        })
    }

    /// That nothing passes, in words: "no complete cluster backup", "no
    /// collection docs complete in any cluster backup", "no snapshot of
    /// source S".
    #[must_use]
    pub fn describe_none(&self) -> String {
        let mut out = match self.collections.as_slice() {
            [one] => format!("no collection {one} complete in any cluster backup"),
            [] if self.cluster => "no complete cluster backup".to_string(),
            [] => "no snapshot".to_string(),
            many => format!(
                "no cluster backup holding collections {} complete",
                many.join(", ")
            ),
        };
        if let Some(src) = &self.source {
            out.push_str(&format!(" of source {src}"));
        }
        out
    }
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(crate) store: RepoStore,
    pub(crate) config: RepoConfig,
    cache_root: PathBuf,
    /// How long this process's leases are valid after each renewal.
    pub(crate) lease_duration: std::time::Duration,
    /// How blobs are sealed and chunks named (plain when unencrypted).
    pub(crate) sealing: cairn_pack::Sealing,
    /// How an encrypted repository was opened.
    unlocked: Option<Arc<Unlocked>>,
}

/// What the key object that opened an encrypted repository holds (the
/// master key, or its write-only part), and that object's name.
#[derive(Debug)]
struct Unlocked {
    material: cairn_crypto::KeyMaterial,
    key_name: String,
}

const INDEX_FETCH_CONCURRENCY: usize = 16;

/// Largest index file read: one holds the trailers of its packs (49 bytes a
/// chunk); larger objects under `index/` are reported and skipped.
const MAX_INDEX_FILE: u64 = 256 * 1024 * 1024;

/// Index entries a cache update keeps decoded at once (about 60 bytes
/// each); see [`Repository::ingest_index_files`].
const INGEST_KEEP_ENTRIES: usize = 4 * 1024 * 1024;

/// Largest manifest, compressed or decompressed.
const MAX_MANIFEST: u64 = 512 * 1024 * 1024;

pub(crate) fn compress_json<T: serde::Serialize>(value: &T) -> (Vec<u8>, Vec<u8>) {
    let json = serde_json::to_vec(value).expect("invariant: manifest types serialize");
    let packed = zstd::bulk::compress(&json, 3).expect("invariant: in-memory zstd cannot fail");
    (json, packed)
}

/// One key object, as `key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// Its name under `keys/`.
    pub name: String,
    /// Its label.
    pub label: String,
    /// What it grants: `full` or `write-only`.
    pub access: String,
    /// The host that added it.
    pub host: String,
    /// When it was added.
    pub created: String,
    /// True for the key this process opened the repository with.
    pub current: bool,
}

/// Wraps what `new` grants of `held` (all of it, or its write-only part)
/// under `new`'s password and writes it as a new key object; its name.
async fn write_key(
    store: &RepoStore,
    held: &cairn_crypto::KeyMaterial,
    new: &NewKey,
) -> Result<String> {
    use cairn_crypto::{Access, KeyMaterial};
    let material = match (held, new.access) {
        (KeyMaterial::Full(m), Access::WriteOnly) => KeyMaterial::WriteOnly(m.write_only()),
        (held, access) if held.access() == access => held.clone(),
        _ => {
            return Err(Error::WriteOnlyKey {
                location: store.location().to_string(),
                action: "add a full key".into(),
            })
        }
    };
    let new = new.clone();
    let file = tokio::task::spawn_blocking(move || {
        cairn_crypto::KeyFile::wrap(
            &material,
            &new.password,
            new.kdf,
            &crate::host::hostname(),
            &new.label,
        )
    })
    .await
    .expect("invariant: key wrapping does not panic")
    .map_err(|e| Error::Key(e.to_string()))?;
    let name = hex::encode(rand::random::<[u8; 16]>());
    store
        .put_new(&keys::key(&name), Bytes::from(file.to_json()))
        .await?;
    Ok(name)
}

/// Every key object that parses, by name; one that does not is named in a
/// warning and skipped.
async fn key_files(store: &RepoStore) -> Result<Vec<(String, cairn_crypto::KeyFile)>> {
    let mut out = Vec::new();
    for l in store.list(keys::KEY_DIR).await? {
        let bytes = store.get(&keys::key(&l.name)).await?;
        match cairn_crypto::KeyFile::parse(&bytes) {
            Ok(f) => out.push((l.name, f)),
            Err(e) => {
                tracing::warn!(key = %l.name, error = %e, "skipping a key object that does not parse")
            }
        }
    }
    Ok(out)
}

/// The master key the first key object that `password` opens holds, and
/// that object's name.
async fn unlock(store: &RepoStore, password: &cairn_crypto::Password) -> Result<Unlocked> {
    let files = key_files(store).await?;
    if files.is_empty() {
        return Err(malformed(
            "keys/",
            "an encrypted repository without any key object that parses",
        ));
    }
    for (key_name, file) in files {
        let pw = password.clone();
        let opened = tokio::task::spawn_blocking(move || file.unwrap(&pw))
            .await
            .expect("invariant: key unwrapping does not panic");
        match opened {
            Ok(material) => return Ok(Unlocked { material, key_name }),
            Err(cairn_crypto::Error::WrongPassword) => {}
            Err(e) => tracing::warn!(key = %key_name, error = %e, "skipping a key object"),
        }
    }
    Err(Error::WrongPassword {
        location: store.location().to_string(),
    })
}

/// The Object Lock requests of `store`, or an error saying that only S3
/// repositories have them.
fn object_lock_of(store: &RepoStore) -> Result<Arc<cairn_store::objectlock::S3ObjectLock>> {
    store.object_lock().cloned().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} is not an S3 repository: Object Lock needs an s3:// bucket with Object Lock enabled (Azure and GCS: use the container's or bucket's own retention policy, docs/operations.md)",
            store.location()
        ))
    })
}

/// The Object Lock requests and mode of a repository whose config asks
/// for Object Lock; `None` when it does not.
fn locking_of(
    store: &RepoStore,
    config: &RepoConfig,
) -> Result<
    Option<(
        Arc<cairn_store::objectlock::S3ObjectLock>,
        cairn_store::objectlock::LockMode,
    )>,
> {
    let Some(l) = &config.object_lock else {
        return Ok(None);
    };
    let mode =
        cairn_store::objectlock::LockMode::parse(&l.mode).map_err(|e| malformed("config", e))?;
    Ok(Some((object_lock_of(store)?, mode)))
}

/// `store`, locking packs and manifests as `config.object_lock` says.
fn with_object_lock(store: RepoStore, config: &RepoConfig) -> Result<RepoStore> {
    let Some((lock, mode)) = locking_of(&store, config)? else {
        return Ok(store);
    };
    let days = config.object_lock.as_ref().map_or(0, |l| l.days);
    Ok(store.map_backend(|b| {
        Arc::new(cairn_store::objectlock::LockingBackend::new(
            b, lock, mode, days,
        ))
    }))
}

fn malformed(what: impl Into<String>, reason: impl ToString) -> Error {
    Error::Malformed {
        what: what.into(),
        reason: reason.to_string(),
    }
}

impl Repository {
    /// Creates a repository at `store`.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] when a config exists; invalid options; storage errors.
    pub async fn init(store: RepoStore, opts: InitOptions, cache_root: &Path) -> Result<Self> {
        opts.chunker.validate().map_err(Error::InvalidArgument)?;
        opts.compression
            .validate()
            .map_err(Error::InvalidArgument)?;
        if !cairn_model::PACK_SIZES.contains(&opts.pack_size) {
            return Err(Error::InvalidArgument(
                "pack size must be between 1 MiB and 1 GiB".into(),
            ));
        }
        if store.exists(keys::CONFIG).await? {
            return Err(Error::AlreadyInitialized {
                location: store.location().to_string(),
            });
        }
        if let Some(l) = &opts.object_lock {
            l.validate().map_err(Error::InvalidArgument)?;
            let lock = object_lock_of(&store)?;
            if !lock.bucket_enabled().await? {
                return Err(Error::InvalidArgument(format!(
                    "bucket {} of {} does not have Object Lock enabled; create a bucket with it (aws s3api create-bucket --object-lock-enabled-for-bucket, or enable it on a versioned bucket with put-object-lock-configuration) or leave out --object-lock",
                    lock.bucket(),
                    store.location()
                )));
            }
        }
        let seed: [u8; 32] = opts.id.unwrap_or_else(rand::random);
        let config = RepoConfig {
            version: if opts.encryption.is_some() {
                cairn_model::ENCRYPTED_VERSION
            } else {
                opts.chunker.format_version()
            },
            id: RepoId(seed),
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: opts.pack_size,
            created: opts.created.unwrap_or_else(chrono::Utc::now),
            encryption: opts.encryption.is_some().then(|| cairn_model::Encryption {
                cipher: opts.cipher.name().into(),
                ..cairn_model::Encryption::default()
            }),
            object_lock: opts.object_lock.clone(),
        };
        let store = with_object_lock(store, &config)?;
        // The first key goes in before the config: a repository is one once
        // its config exists, and an encrypted one must then be openable.
        let unlocked = match &opts.encryption {
            None => None,
            Some(k) => {
                let material = cairn_crypto::KeyMaterial::Full(cairn_crypto::MasterKey::generate());
                let key_name = write_key(&store, &material, k).await?;
                Some(Arc::new(Unlocked { material, key_name }))
            }
        };
        let json = serde_json::to_vec_pretty(&config).expect("invariant: config serializes");
        match store.put_new(keys::CONFIG, Bytes::from(json)).await {
            Err(cairn_store::Error::AlreadyExists { .. }) => {
                if let Some(u) = &unlocked {
                    let _ = store.delete(&keys::key(&u.key_name)).await;
                }
                Err(Error::AlreadyInitialized {
                    location: store.location().to_string(),
                })
            }
            Err(e) => Err(e.into()),
            Ok(()) => Ok(Self::from_parts(store, config, cache_root, unlocked)),
        }
    }

    fn from_parts(
        store: RepoStore,
        config: RepoConfig,
        cache_root: &Path,
        unlocked: Option<Arc<Unlocked>>,
    ) -> Self {
        let (store, sealing) = match &unlocked {
            None => (store, cairn_pack::Sealing::plain()),
            Some(u) => {
                let cipher = config
                    .encryption
                    .as_ref()
                    .and_then(|e| cairn_crypto::Cipher::from_name(&e.cipher))
                    .expect("invariant: an encrypted config names a known cipher (validated)");
                let keys = Arc::new(cairn_crypto::Keys::new(&u.material, cipher));
                (
                    store.map_backend(|b| {
                        Arc::new(cairn_store::sealed::SealedBackend::new(
                            b,
                            Arc::clone(&keys),
                        ))
                    }),
                    cairn_pack::Sealing::with_keys(keys),
                )
            }
        };
        Self {
            store,
            config,
            cache_root: cache_root.to_path_buf(),
            lease_duration: DEFAULT_LEASE,
            sealing,
            unlocked,
        }
    }

    /// Opens an existing repository.
    ///
    /// # Errors
    /// [`Error::NotARepository`], [`Error::NewerFormat`], a malformed config, storage errors.
    pub async fn open(store: RepoStore, cache_root: &Path) -> Result<Self> {
        Self::open_with(store, cache_root, None).await
    }

    /// Opens an existing repository; an encrypted one with `password`.
    ///
    /// # Errors
    /// As [`Repository::open`]; [`Error::PasswordRequired`] for an encrypted
    /// repository without a password, [`Error::WrongPassword`] when no key
    /// opens with it.
    pub async fn open_with(
        store: RepoStore,
        cache_root: &Path,
        password: Option<&cairn_crypto::Password>,
    ) -> Result<Self> {
        let raw = match store.get(keys::CONFIG).await {
            Ok(b) => b,
            Err(cairn_store::Error::NotFound { .. }) => {
                return Err(Error::NotARepository {
                    location: store.location().to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        // Check the version before the full schema: a newer format may add fields.
        let probe: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| malformed("config", e))?;
        let version = probe
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| malformed("config", "no version field"))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(Error::NewerFormat {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let config: RepoConfig =
            serde_json::from_value(probe).map_err(|e| malformed("config", e))?;
        config.validate().map_err(|e| malformed("config", e))?;
        if config.version < config.chunker.format_version() {
            return Err(malformed(
                "config",
                format!(
                    "version {} cannot have per-kind chunk sizes (format version 2)",
                    config.version
                ),
            ));
        }
        let unlocked = match (&config.encryption, password) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::PasswordRequired {
                    location: store.location().to_string(),
                })
            }
            (Some(_), Some(pw)) => Some(Arc::new(unlock(&store, pw).await?)),
        };
        let store = with_object_lock(store, &config)?;
        Ok(Self::from_parts(store, config, cache_root, unlocked))
    }

    /// True when the repository is encrypted.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.unlocked.is_some()
    }

    /// The Object Lock requests and mode, when the repository keeps its
    /// backups under Object Lock (checked when it was opened).
    pub(crate) fn locking(
        &self,
    ) -> Option<(
        Arc<cairn_store::objectlock::S3ObjectLock>,
        cairn_store::objectlock::LockMode,
    )> {
        locking_of(&self.store, &self.config).ok().flatten()
    }

    /// What the key in use grants (full for an unencrypted repository).
    #[must_use]
    pub fn access(&self) -> cairn_crypto::Access {
        self.unlocked
            .as_ref()
            .map_or(cairn_crypto::Access::Full, |u| u.material.access())
    }

    /// [`Error::WriteOnlyKey`] naming `action` when the key in use is
    /// write-only. Every command that reads backups calls it first.
    ///
    /// # Errors
    /// As said.
    pub fn require_read(&self, action: &str) -> Result<()> {
        match self.access() {
            cairn_crypto::Access::Full => Ok(()),
            cairn_crypto::Access::WriteOnly => Err(Error::WriteOnlyKey {
                location: self.location().to_string(),
                action: action.to_string(),
            }),
        }
    }

    /// How the repository was opened, or [`Error::Key`] when it is not
    /// encrypted.
    fn unlocked(&self) -> Result<&Unlocked> {
        self.unlocked.as_deref().ok_or_else(|| {
            Error::Key(format!(
                "{} is not encrypted: it has no keys (its data is protected only by the storage's own encryption)",
                self.location()
            ))
        })
    }

    /// The key objects (`key list`): name, label, host, creation time, and
    /// whether it is the one that opened the repository.
    ///
    /// # Errors
    /// [`Error::Key`] for a repository without encryption; storage errors.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        let u = self.unlocked()?;
        let mut out: Vec<KeyInfo> = key_files(&self.store)
            .await?
            .into_iter()
            .map(|(name, k)| KeyInfo {
                current: name == u.key_name,
                name,
                label: k.label,
                access: k.access.to_string(),
                host: k.host,
                created: k.created,
            })
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Adds a key that `new` opens (a full key, or a write-only one for
    /// backup agents); returns its name. Needs a full key.
    ///
    /// # Errors
    /// [`Error::Key`] for a repository without encryption;
    /// [`Error::WriteOnlyKey`]; storage errors.
    pub async fn add_key(&self, new: &NewKey) -> Result<String> {
        let u = self.unlocked()?;
        self.require_read("add keys")?;
        write_key(&self.store, &u.material, new).await
    }

    /// Removes the key object `name` (a unique prefix of it will do). The
    /// key that opened the repository is kept: remove it with another.
    ///
    /// # Errors
    /// [`Error::Key`] for an unknown or ambiguous name, the current key, or
    /// a repository without encryption; storage errors.
    pub async fn remove_key(&self, name: &str) -> Result<String> {
        let u = self.unlocked()?;
        self.require_read("remove keys")?;
        let all = self.store.list(keys::KEY_DIR).await?;
        let matching: Vec<&str> = all
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| n.starts_with(name))
            .collect();
        let full = match matching.as_slice() {
            [one] => (*one).to_string(),
            [] => return Err(Error::Key(format!("no key {name} in {}", self.location()))),
            _ => {
                return Err(Error::Key(format!(
                    "{name} matches more than one key; give more digits"
                )))
            }
        };
        if full == u.key_name {
            return Err(Error::Key(format!(
                "key {full} is the one this command opened the repository with; open it with another key's password to remove this one (or use key passwd)"
            )));
        }
        self.store.delete(&keys::key(&full)).await?;
        Ok(full)
    }

    /// Replaces the key that opened the repository with one that `new`
    /// opens (`key passwd`), granting the same: the new key is written
    /// first, then the old one deleted. Returns (old name, new name).
    ///
    /// # Errors
    /// As [`Repository::add_key`], except that a write-only key may change
    /// its own password.
    pub async fn change_password(&self, new: &NewKey) -> Result<(String, String)> {
        let u = self.unlocked()?;
        let new = NewKey {
            access: u.material.access(),
            ..new.clone()
        };
        let name = write_key(&self.store, &u.material, &new).await?;
        self.store.delete(&keys::key(&u.key_name)).await?;
        Ok((u.key_name.clone(), name))
    }

    /// Sets how long this process's leases (the markers of running backups
    /// and prunes) stay valid after each renewal; default 15 minutes.
    #[must_use]
    pub fn with_lease_duration(mut self, d: std::time::Duration) -> Self {
        self.lease_duration = d.max(std::time::Duration::from_secs(1));
        self
    }

    /// The repository config.
    #[must_use]
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The storage location.
    #[must_use]
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// Directory of this repository's local cache.
    #[must_use]
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_root.join(self.config.id.to_hex())
    }

    /// The index files listed, by id, with their sizes. An object under
    /// `index/` whose name is not an id is a stray: it is named in a warning
    /// and skipped (`check` reports it).
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn list_index(&self) -> Result<Vec<(IndexId, u64)>> {
        Ok(self
            .store
            .list(keys::INDEX_DIR)
            .await?
            .into_iter()
            .filter_map(|l| match l.name.parse::<IndexId>() {
                Ok(id) => Some((id, l.size)),
                Err(_) => {
                    tracing::warn!(object = %format!("{}/{}", keys::INDEX_DIR, l.name), "skipping an object that is not an index file");
                    None
                }
            })
            .collect())
    }

    /// Opens the local chunk index and brings it up to date with the
    /// repository's index files: new files are ingested; if files it had seen
    /// are gone (or the cache is unusable) it is rebuilt from scratch.
    ///
    /// # Errors
    /// Storage, RocksDB or malformed index files.
    pub async fn chunk_index(&self) -> Result<Arc<ChunkIndex>> {
        let dir = self.cache_dir();
        let listed_sizes = self.list_index().await?;
        let listed: HashSet<IndexId> = listed_sizes.iter().map(|(n, _)| *n).collect();
        // A slot of its own, or wait: see cairn_index's crate docs.
        let idx = tokio::task::spawn_blocking(move || ChunkIndex::open_shared(&dir))
            .await
            .expect("invariant: index open does not panic")?;
        let idx = Arc::new(idx);
        let seen = idx.ingested_files()?;
        let missing: Vec<(IndexId, u64)> = listed_sizes
            .iter()
            .filter(|(n, _)| !seen.contains(n))
            .copied()
            .collect();
        if !missing.is_empty() {
            tracing::info!(
                files = missing.len(),
                "updating local chunk index from repository index files"
            );
        }
        self.ingest_index_files(&idx, missing, INGEST_KEEP_ENTRIES)
            .await?;
        // Files the cache knows that are gone: fine when a prune superseded
        // them (what is still needed came with the files that replaced them);
        // anything else means the cache may hold stale locations: rebuild.
        let gone: Vec<IndexId> = seen.difference(&listed).copied().collect();
        if gone.is_empty() {
            return Ok(idx);
        }
        let superseded = idx.superseded_files()?;
        if gone.iter().all(|n| superseded.contains(n)) {
            idx.forget_files(&gone)?;
            return Ok(idx);
        }
        tracing::info!("repository index files were removed; rebuilding the local chunk index");
        idx.clear()?;
        self.ingest_index_files(&idx, listed_sizes, INGEST_KEEP_ENTRIES)
            .await?;
        Ok(idx)
    }

    /// Fetches and ingests index files: superseded ones first, so that the
    /// locations of the files replacing them win. Damaged files are named
    /// and skipped.
    ///
    /// Memory is bounded whatever the repository's size: the files are read
    /// once to learn what supersedes what, keeping up to `keep` entries
    /// decoded ([`INGEST_KEEP_ENTRIES`]); files beyond that are read again
    /// when their turn to be ingested comes (only on a fresh cache of a
    /// large repository).
    async fn ingest_index_files(
        &self,
        idx: &Arc<ChunkIndex>,
        files: Vec<(IndexId, u64)>,
        keep: usize,
    ) -> Result<()> {
        let mut fetched = std::pin::pin!(futures::stream::iter(files)
            .map(
                |(name, size)| async move { (name, size, self.fetch_index_file(name, size).await) }
            )
            .buffer_unordered(INDEX_FETCH_CONCURRENCY));
        let mut kept = 0usize;
        let mut good: Vec<(IndexId, u64, Vec<IndexId>, Option<IndexFile>)> = Vec::new();
        let mut damaged: Vec<IndexId> = Vec::new();
        while let Some((name, size, r)) = fetched.next().await {
            let malformed = matches!(r, Err(Error::Malformed { .. }));
            let Some(f) = crate::services::view::skip_damaged_index(name, r)? else {
                if malformed {
                    damaged.push(name);
                }
                continue;
            };
            let entries: usize = f.groups.iter().map(|g| g.entries.len()).sum();
            let supersedes = f.supersedes.clone();
            let keeps = kept + entries <= keep;
            if keeps {
                kept += entries;
            }
            good.push((name, size, supersedes, keeps.then_some(f)));
        }
        let mut superseded: HashSet<IndexId> = idx.superseded_files()?;
        for (_, _, s, _) in &good {
            superseded.extend(s.iter().copied());
        }
        good.sort_by_key(|(n, ..)| !superseded.contains(n));
        for (name, size, _, f) in good {
            let f = match f {
                Some(f) => f,
                None => match crate::services::view::skip_damaged_index(
                    name,
                    self.fetch_index_file(name, size).await,
                )? {
                    Some(f) => f,
                    None => continue,
                },
            };
            let idx = Arc::clone(idx);
            tokio::task::spawn_blocking(move || {
                idx.ingest_superseding(&name, &f.supersedes, &f.groups)
            })
            .await
            .expect("invariant: ingest does not panic")?;
        }
        if !damaged.is_empty() {
            self.cover_from_trailers(idx, &damaged).await?;
        }
        Ok(())
    }

    /// What damaged index files covered, from the packs themselves: every
    /// pack no readable index file names has its trailer read and its
    /// entries ingested, under the damaged files' names (so later commands
    /// do not read them again). The repository is not changed; the warning
    /// says to run `cairn repair index`, which rewrites the index files.
    async fn cover_from_trailers(&self, idx: &Arc<ChunkIndex>, damaged: &[IndexId]) -> Result<()> {
        let listed: Vec<(IndexId, u64)> = self
            .list_index()
            .await?
            .into_iter()
            .filter(|(n, _)| !damaged.contains(n))
            .collect();
        let files: Vec<Result<IndexFile>> = futures::stream::iter(listed)
            .map(|(name, size)| async move { self.fetch_index_file(name, size).await })
            .buffer_unordered(INDEX_FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut named: HashSet<cairn_model::PackId> = HashSet::new();
        for f in files.into_iter().flatten() {
            named.extend(f.groups.iter().map(|g| g.pack));
        }
        let uncovered: Vec<(cairn_model::PackId, u64)> = self
            .pack_sizes()
            .await?
            .into_iter()
            .filter(|(p, _)| !named.contains(p))
            .collect();
        let read = self
            .read_trailers(uncovered, &crate::progress::NoProgress)
            .await;
        let mut groups = Vec::new();
        for (pack, r) in read {
            match r {
                Ok(g) => groups.push(g),
                Err(why) => {
                    tracing::warn!(pack = %keys::pack(&pack), reason = %why, "a pack no index file names has no readable trailer either");
                }
            }
        }
        let chunks: usize = groups.iter().map(|g| g.entries.len()).sum();
        tracing::warn!(
            damaged = %damaged.iter().map(|d| keys::index(d)).collect::<Vec<_>>().join(", "),
            packs = groups.len(),
            chunks,
            "damaged index files: the chunks of the packs no readable index file names were read from the packs' trailers; run `cairn repair index` to rewrite the index files"
        );
        for (i, name) in damaged.iter().enumerate() {
            let idx = Arc::clone(idx);
            let name = *name;
            let g = if i == 0 {
                std::mem::take(&mut groups)
            } else {
                Vec::new()
            };
            tokio::task::spawn_blocking(move || idx.ingest_superseding(&name, &[], &g))
                .await
                .expect("invariant: ingest does not panic")?;
        }
        Ok(())
    }

    /// Reads and decodes one index file of `size` bytes (as listed).
    async fn fetch_index_file(&self, name: IndexId, size: u64) -> Result<IndexFile> {
        if size > MAX_INDEX_FILE {
            return Err(malformed(
                format!("index file {name}"),
                format!("{size} bytes, more than an index file may have"),
            ));
        }
        self.load_index_file(&name).await
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// Storage errors or malformed manifests.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let ids = self.snapshot_ids().await?;
        self.load_snapshots(&ids).await
    }

    /// The ids of the snapshots in the repository (one listing, no
    /// manifest read). An object under `snapshots/` not named by an id, or
    /// larger than a manifest may be, is named in a warning and skipped.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let listed = self.store.list(keys::SNAPSHOT_DIR).await?;
        let mut ids = Vec::with_capacity(listed.len());
        for l in listed {
            match l.name.parse::<SnapshotId>() {
                Err(_) => {
                    tracing::warn!(object = %keys::snapshot_key(&l.name), "skipping an object under snapshots/ not named by a snapshot id")
                }
                Ok(_) if l.size > MAX_MANIFEST => {
                    tracing::warn!(object = %keys::snapshot_key(&l.name), bytes = l.size, "skipping a snapshot manifest larger than a manifest may be")
                }
                Ok(id) => ids.push(id),
            }
        }
        Ok(ids)
    }

    /// Loads the manifests of `ids`, oldest first. An unreadable manifest is
    /// skipped with a warning (one bad object must not hide every good
    /// snapshot); one forgotten meanwhile is left out.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn load_snapshots(&self, ids: &[SnapshotId]) -> Result<Vec<SnapshotInfo>> {
        Ok(self.load_snapshots_reporting(ids).await?.0)
    }

    /// As [`Repository::load_snapshots`], also returning the manifests that
    /// could not be read and why (`check` reports them).
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn load_snapshots_reporting(
        &self,
        ids: &[SnapshotId],
    ) -> Result<(Vec<SnapshotInfo>, Vec<(SnapshotId, String)>)> {
        let loaded: Vec<(SnapshotId, Result<SnapshotInfo>)> =
            futures::stream::iter(ids.iter().copied())
                .map(|id| async move { (id, self.load_snapshot(id).await) })
                .buffer_unordered(INDEX_FETCH_CONCURRENCY)
                .collect()
                .await;
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(info) => out.push(info),
                Err(e @ (Error::Malformed { .. } | Error::NewerFormat { .. })) => {
                    tracing::warn!(object = %keys::snapshot(&id), error = %e, "skipping an unreadable snapshot manifest");
                    unreadable.push((id, e.to_string()));
                }
                Err(Error::Store(cairn_store::Error::NotFound { .. })) => {} // forgotten meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok((out, unreadable))
    }

    /// Loads and verifies one manifest.
    ///
    /// # Errors
    /// Not found, malformed, or a manifest whose content does not match its id.
    pub async fn load_snapshot(&self, id: SnapshotId) -> Result<SnapshotInfo> {
        self.require_read("read snapshot manifests")?;
        let what = || format!("snapshot {id}");
        let packed = self
            .store
            .get(&keys::snapshot(&id))
            .await
            .map_err(|e| crate::error::damaged(e, what))?;
        let json = {
            use std::io::Read;
            let mut json = Vec::new();
            zstd::stream::read::Decoder::new(&packed[..])
                .and_then(|d| d.take(MAX_MANIFEST + 1).read_to_end(&mut json))
                .map_err(|e| malformed(what(), e))?;
            if json.len() as u64 > MAX_MANIFEST {
                return Err(malformed(
                    what(),
                    "decompresses to more than a manifest may have",
                ));
            }
            json
        };
        if SnapshotId::of(&json) != id {
            return Err(malformed(what(), "content does not match its id"));
        }
        let snapshot: Snapshot = serde_json::from_slice(&json).map_err(|e| malformed(what(), e))?;
        if snapshot.version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                found: snapshot.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(SnapshotInfo {
            id,
            snapshot,
            manifest_size: packed.len() as u64,
        })
    }

    /// Resolves `latest` or a (prefix of a) snapshot id.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], storage errors.
    pub async fn find_snapshot(&self, spec: &str) -> Result<SnapshotInfo> {
        self.find_snapshot_in(spec, &SnapshotFilter::default())
            .await
    }

    /// Resolves `latest` among the snapshots `filter` admits, within one
    /// source: when they come from several sources the choice is refused
    /// ([`Error::AmbiguousLatest`], listing them). Ids resolve as in
    /// [`Repository::find_snapshot`].
    ///
    /// # Errors
    /// As [`Repository::find_snapshot`]; [`Error::AmbiguousLatest`].
    pub async fn find_snapshot_in(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<SnapshotInfo> {
        let not_found = || Error::SnapshotNotFound {
            spec: spec.to_string(),
        };
        if spec == "latest" {
            let candidates: Vec<SnapshotInfo> = self
                .snapshots()
                .await?
                .into_iter()
                .filter(|i| filter.matches(&i.snapshot))
                .collect();
            let mut newest: std::collections::BTreeMap<String, &SnapshotInfo> =
                std::collections::BTreeMap::new();
            for i in &candidates {
                newest.insert(i.snapshot.source_key(), i); // oldest first, so the last wins
            }
            if newest.len() > 1 {
                return Err(Error::AmbiguousLatest {
                    count: newest.len(),
                    sources: newest
                        .iter()
                        .map(|(k, i)| {
                            format!(
                                "  {k}  (latest {} at {})",
                                i.id.short(),
                                i.snapshot
                                    .time
                                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                });
            }
            if newest.is_empty() {
                let others = self.snapshots().await?.len();
                if others > 0 {
                    return Err(Error::NoLatest {
                        none: filter.describe_none(),
                        others,
                    });
                }
            }
            return newest.into_values().next().cloned().ok_or_else(not_found);
        }
        if let Ok(id) = spec.parse::<SnapshotId>() {
            return match self.load_snapshot(id).await {
                Err(Error::Store(cairn_store::Error::NotFound { .. })) => Err(not_found()),
                other => other,
            };
        }
        let spec_lc = spec.to_ascii_lowercase();
        if spec_lc.len() < 4 || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let names: Vec<String> = self
            .store
            .list(keys::SNAPSHOT_DIR)
            .await?
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n.starts_with(&spec_lc))
            .collect();
        match names.as_slice() {
            [] => Err(not_found()),
            [one] => {
                self.load_snapshot(one.parse().map_err(|e| malformed("snapshot name", e))?)
                    .await
            }
            _ => Err(Error::AmbiguousSnapshot {
                spec: spec.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use cairn_index::ChunkIndex;
    use cairn_model::{
        ChunkId, Codec, IndexEntry, IndexFile, IndexGroup, IndexId, PackId, Snapshot, SnapshotId,
    };
    use cairn_store::{keys, RepoStore};

    use super::{InitOptions, Repository};

    /// A file that supersedes another wins on a fresh cache, whichever is
    /// listed first, both when every file stays decoded and when each is
    /// read again for its turn (a budget of no entries).
    #[tokio::test]
    async fn a_fresh_cache_takes_the_superseding_location_whatever_the_budget() {
        let (x, y) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let (old_pack, new_pack) = (PackId([5; 32]), PackId([6; 32]));
        let entry = |id, offset| IndexEntry {
            id,
            offset,
            length: 10,
            raw_length: 10,
            codec: Codec::Raw,
        };
        let group = |pack, entries| IndexGroup {
            pack,
            pack_length: 100,
            entries,
        };
        for keep in [usize::MAX, 0] {
            for superseding_first in [false, true] {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = RepoStore::open(dir.path().join("repo").to_str().expect("utf8"), true)
                    .expect("store");
                let repo = Repository::init(store, InitOptions::default(), &dir.path().join("c"))
                    .await
                    .expect("init");
                let old = IndexFile {
                    supersedes: Vec::new(),
                    groups: vec![group(old_pack, vec![entry(x, 16)])],
                }
                .encode();
                let old_name = IndexId::of(&old);
                let new = IndexFile {
                    supersedes: vec![old_name],
                    groups: vec![group(new_pack, vec![entry(x, 32), entry(y, 48)])],
                }
                .encode();
                let new_name = IndexId::of(&new);
                let mut files = vec![(old_name, old.len() as u64), (new_name, new.len() as u64)];
                if superseding_first {
                    files.reverse();
                }
                for (name, bytes) in [(old_name, old), (new_name, new)] {
                    repo.store
                        .put_content_addressed(&keys::index(&name), Bytes::from(bytes))
                        .await
                        .expect("put");
                }
                let idx = Arc::new(ChunkIndex::open(&dir.path().join("idx")).expect("index"));
                repo.ingest_index_files(&idx, files, keep)
                    .await
                    .expect("ingest");
                let case = format!("keep {keep}, superseding first {superseding_first}");
                let at = |id| idx.get(&id).expect("get").expect(&case);
                assert_eq!((at(x).pack, at(x).offset), (new_pack, 32), "{case}");
                assert_eq!((at(y).pack, at(y).offset), (new_pack, 48), "{case}");
                assert_eq!(idx.ingested_files().expect("files").len(), 2, "{case}");
            }
        }
    }

    /// The manifest vector of docs/format.md, "Test vectors": parsed and
    /// written again byte for byte, with the documented id.
    #[test]
    fn format_md_manifest_vector() {
        let line = concat!(
            r#"{"version":2,"time":"2026-01-01T00:00:00.000000Z","host":"h","tags":[],"source":["/tmp/hello.txt"],"#,
            r#""files":[{"path":"hello.txt","size":5,"mode":420,"mtime":0,"chunks":["ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"],"new_bytes":5,"new_stored_bytes":5}],"#,
            r#""totals":{"files":1,"bytes":5,"chunks":1,"new_chunks":1,"new_bytes":5,"new_stored_bytes":5,"new_packs":1,"#,
            r#""requests":{"puts":0,"gets":0,"lists":0,"heads":0,"deletes":0}}}"#
        );
        assert_eq!(line.len(), 442);
        let snapshot: Snapshot = serde_json::from_str(line).expect("parses");
        let (json, packed) = super::compress_json(&snapshot);
        assert_eq!(std::str::from_utf8(&json).expect("utf8"), line);
        assert_eq!(
            SnapshotId::of(&json).to_hex(),
            "732f9437c5f079d0a7005bbf139cc8d02885d17dbba00e20a0ee5f4a8a102fc4"
        );
        assert_eq!(
            zstd::bulk::decompress(&packed, 1 << 20).expect("zstd"),
            json
        );
    }
}
