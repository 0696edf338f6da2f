//! Encryption of repository data: the master key and what derives from it,
//! sealing and opening of objects and blobs, keyed chunk ids, and key
//! objects that wrap a key with a password (Argon2id).
//!
//! Two ways of sealing, so that a write-only key can add backups without
//! being able to read any:
//! - **to the repository key** (blobs, pack trailers, manifests, run
//!   records): the writer makes a one-time X25519 key pair, agrees a key
//!   with the repository's public key, and stores its one-time public key
//!   in front. Only the repository's secret key (in a full key) opens it.
//!   A pack uses one such key pair for all its blobs and its trailer; a
//!   blob's nonce is the start of its (keyed) chunk id, so a blob is
//!   `one-time public key [32] | ciphertext | tag [16]` and moves between
//!   packs as it is. An object or a trailer is `one-time public key [32] |
//!   nonce [24] | ciphertext | tag [16]`. The AEAD is the repository's
//!   [`Cipher`]: AES-256-GCM for new repositories (each key seals one pack
//!   or object, so its 96-bit nonces never repeat), XChaCha20-Poly1305 for
//!   repositories made before it.
//! - **with the index key** (index files, prune plans): `nonce [24] |
//!   ciphertext | tag [16]`, always XChaCha20-Poly1305 (a long-lived key
//!   with random nonces wants 192 of them); full and write-only keys both
//!   hold it, because a writer deduplicates against the index and must see
//!   prune plans.
//!
//! Random nonces wherever a key seals more than one pack (no counter is
//! kept across processes and hosts), and associated data naming the kind
//! of object. See docs/format.md, Encryption, and docs/threat-model.md.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod password;
pub use password::{Password, PasswordSource};

/// Bytes of the random nonce in front of a string sealed with a
/// symmetric key.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag at its end.
pub const TAG_LEN: usize = 16;
/// What sealing with a symmetric key (index files, prune plans, key
/// objects) adds to a byte string.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of an X25519 public key.
pub const PUBLIC_LEN: usize = 32;
/// What sealing an object or a trailer to the repository key adds.
pub const BOX_OVERHEAD: usize = PUBLIC_LEN + NONCE_LEN + TAG_LEN;
/// Room a blob takes in front of its bytes (its pack's one-time public key).
pub const BLOB_HEAD: usize = PUBLIC_LEN;
/// What sealing adds to a blob.
pub const BLOB_OVERHEAD: usize = BLOB_HEAD + TAG_LEN;

/// Directories whose objects are sealed with the index key, which
/// write-only keys hold too; every other sealed object is sealed to the
/// repository key.
pub const INDEX_KEY_DIRS: [&str; 3] = ["index", "gc", "pending"];

const SECRET_CONTEXT: &str = "cairn 2026-12 repository secret key";
const INDEX_CONTEXT: &str = "cairn 2026-12 index key";
const BOX_CONTEXT: &str = "cairn 2026-12 sealed to the repository key";

/// The AEAD of what is sealed to the repository key (`config.encryption.cipher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cipher {
    /// AES-256-GCM (what new repositories use): with AES-NI and carry-less
    /// multiplication several times faster than XChaCha20-Poly1305.
    #[default]
    Aes256Gcm,
    /// XChaCha20-Poly1305 (encrypted repositories made before AES-256-GCM).
    XChaCha20Poly1305,
}

impl Cipher {
    /// Its name in the config.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes-256-gcm",
            Self::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }

    /// The cipher a config names.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Aes256Gcm, Self::XChaCha20Poly1305]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// A key of one of the ciphers; nonces are [`NONCE_LEN`] bytes, of which
/// AES-256-GCM takes the first 12.
#[derive(Clone)]
enum AeadKey {
    XChaCha(XChaCha20Poly1305),
    Aes(ring::aead::LessSafeKey),
}

impl AeadKey {
    fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        match cipher {
            Cipher::XChaCha20Poly1305 => Self::XChaCha(XChaCha20Poly1305::new(key.into())),
            Cipher::Aes256Gcm => Self::Aes(ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
                    .expect("invariant: AES-256-GCM takes 32-byte keys"),
            )),
        }
    }

    fn aes_nonce(nonce: &[u8]) -> ring::aead::Nonce {
        ring::aead::Nonce::try_assume_unique_for_key(&nonce[..ring::aead::NONCE_LEN])
            .expect("invariant: a nonce has at least 12 bytes")
    }

    /// Seals `buf` in place; returns the tag.
    fn seal(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Self::XChaCha(c) => c
                .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf)
                .expect("invariant: XChaCha20-Poly1305 seals any length below 256 GiB")
                .into(),
            Self::Aes(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Self::aes_nonce(nonce),
                        ring::aead::Aad::from(aad),
                        buf,
                    )
                    .expect("invariant: AES-256-GCM seals any length below 64 GiB");
                tag.as_ref()
                    .try_into()
                    .expect("invariant: tags are 16 bytes")
            }
        }
    }

    /// Opens `buf` in place against `tag`.
    fn open(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<()> {
        match self {
            Self::XChaCha(c) => c
                .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, tag.into())
                .map_err(|_| Error::Unauthentic),
            Self::Aes(k) => {
                let tag = ring::aead::Tag::try_from(tag).map_err(|_| Error::Unauthentic)?;
                k.open_in_place_separate_tag(
                    Self::aes_nonce(nonce),
                    ring::aead::Aad::from(aad),
                    tag,
                    buf,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| Error::Unauthentic)
            }
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Authentication failed: the bytes were changed, truncated, or sealed
    /// with another key or for another kind of object.
    #[error("does not decrypt: damaged, or written with another key")]
    Unauthentic,
    /// The key in use is write-only and this is sealed to the repository key.
    #[error("the key in use is write-only: it adds backups but cannot read them")]
    WriteOnly,
    /// No key object opens with the password given.
    #[error("wrong password: no key of the repository opens with it")]
    WrongPassword,
    /// A key object that does not parse or breaks a bound.
    #[error("key object is malformed: {0}")]
    MalformedKey(String),
    /// The password could not be obtained.
    #[error("{0}")]
    Password(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository's secret: one key from which the cipher keys derive,
/// one for chunk ids. Zeroed when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct MasterKey {
    data: [u8; 32],
    ids: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random key (from the operating system's generator, through
    /// `rand`'s thread-local cryptographic generator).
    #[must_use]
    pub fn generate() -> Self {
        Self {
            data: rand::random(),
            ids: rand::random(),
        }
    }

    fn secret(&self) -> StaticSecret {
        StaticSecret::from(blake3::derive_key(SECRET_CONTEXT, &self.data))
    }

    /// What a write-only key holds: the chunk-id key, the index key and the
    /// repository's public key, but not its secret key.
    #[must_use]
    pub fn write_only(&self) -> WriteOnlyKey {
        WriteOnlyKey {
            ids: self.ids,
            index: blake3::derive_key(INDEX_CONTEXT, &self.data),
            public: PublicKey::from(&self.secret()).to_bytes(),
        }
    }
}

/// The part of a [`MasterKey`] a backup agent needs to add backups: it
/// names chunks, reads the index and prune plans, and seals to the
/// repository key, but opens nothing sealed to it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct WriteOnlyKey {
    ids: [u8; 32],
    index: [u8; 32],
    public: [u8; 32],
}

impl fmt::Debug for WriteOnlyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteOnlyKey(..)")
    }
}

/// What a key object grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Everything: back up, restore, check, prune, manage keys.
    #[default]
    Full,
    /// Back up only.
    WriteOnly,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::WriteOnly => "write-only",
        })
    }
}

/// What a key object wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// The master key.
    Full(MasterKey),
    /// Its write-only part.
    WriteOnly(WriteOnlyKey),
}

impl KeyMaterial {
    /// What it grants.
    #[must_use]
    pub fn access(&self) -> Access {
        match self {
            Self::Full(_) => Access::Full,
            Self::WriteOnly(_) => Access::WriteOnly,
        }
    }

    fn wrapped_len(access: Access) -> usize {
        match access {
            Access::Full => 64,
            Access::WriteOnly => 96,
        }
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut b = Zeroizing::new(Vec::with_capacity(96));
        match self {
            Self::Full(m) => {
                b.extend_from_slice(&m.data);
                b.extend_from_slice(&m.ids);
            }
            Self::WriteOnly(w) => {
                b.extend_from_slice(&w.ids);
                b.extend_from_slice(&w.index);
                b.extend_from_slice(&w.public);
            }
        }
        b
    }

    fn from_bytes(access: Access, b: &[u8]) -> Result<Self> {
        if b.len() != Self::wrapped_len(access) {
            return Err(Error::MalformedKey(format!(
                "wrapped {access} key is {} bytes, expected {}",
                b.len(),
                Self::wrapped_len(access)
            )));
        }
        let part = |i: usize| -> [u8; 32] { b[32 * i..32 * (i + 1)].try_into().expect("32 bytes") };
        Ok(match access {
            Access::Full => Self::Full(MasterKey {
                data: part(0),
                ids: part(1),
            }),
            Access::WriteOnly => Self::WriteOnly(WriteOnlyKey {
                ids: part(0),
                index: part(1),
                public: part(2),
            }),
        })
    }
}

/// What kind of object a sealed string is, bound into its tag so that a
/// sealed object cannot be passed off as another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chunk's stored bytes inside a pack.
    Blob,
    /// A pack's trailer.
    Trailer,
    /// A whole object under a directory (`index`, `snapshots`, `gc`, `runs`).
    Object(&'static str),
}

impl Kind {
    fn aad(self) -> Vec<u8> {
        match self {
            Self::Blob => b"cairn blob".to_vec(),
            Self::Trailer => b"cairn trailer".to_vec(),
            Self::Object(dir) => format!("cairn object {dir}").into_bytes(),
        }
    }

    fn uses_index_key(self) -> bool {
        matches!(self, Self::Object(dir) if INDEX_KEY_DIRS.contains(&dir))
    }
}

/// The key two sides agree for one one-time public key.
fn box_cipher(
    cipher: Cipher,
    shared: &[u8; 32],
    one_time: &[u8; 32],
    repository: &[u8; 32],
) -> AeadKey {
    let mut hasher = blake3::Hasher::new_derive_key(BOX_CONTEXT);
    hasher.update(shared);
    hasher.update(one_time);
    hasher.update(repository);
    let key = Zeroizing::new(*hasher.finalize().as_bytes());
    AeadKey::new(cipher, &key)
}

fn blob_nonce(id: &[u8; 32]) -> &[u8] {
    &id[..NONCE_LEN]
}

/// One pack's sealing: a one-time key pair agreed with the repository's
/// public key (its secret half is dropped at once). Seals the pack's blobs
/// and its trailer.
#[derive(Clone)]
pub struct PackSeal {
    one_time: [u8; 32],
    cipher: AeadKey,
}

impl fmt::Debug for PackSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PackSeal(..)")
    }
}

impl PackSeal {
    /// Seals a blob in place: `buf` is [`BLOB_HEAD`] bytes of room, the
    /// plaintext, then [`TAG_LEN`] bytes of room (what a writer reserved
    /// around it). `id` is the blob's chunk id; its start is the nonce
    /// (distinct chunks have distinct ids).
    ///
    /// # Panics
    /// If `buf` is shorter than [`BLOB_OVERHEAD`].
    pub fn seal_blob_in_place(&self, buf: &mut [u8], id: &[u8; 32]) {
        let (head, rest) = buf.split_at_mut(BLOB_HEAD);
        let body_len = rest.len() - TAG_LEN;
        let (body, tail) = rest.split_at_mut(body_len);
        head.copy_from_slice(&self.one_time);
        let tag = self.cipher.seal(blob_nonce(id), &Kind::Blob.aad(), body);
        tail.copy_from_slice(&tag);
    }

    /// Appends `plain` (a trailer), sealed, to `out`.
    pub fn seal_trailer_into(&self, plain: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.one_time);
        seal_with(&self.cipher, plain, Kind::Trailer, out);
    }
}

/// Appends `nonce | ciphertext | tag` of `plain` under `cipher` to `out`.
fn seal_with(cipher: &AeadKey, plain: &[u8], kind: Kind, out: &mut Vec<u8>) {
    let nonce: [u8; NONCE_LEN] = rand::random();
    out.reserve(plain.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = cipher.seal(&nonce, &kind.aad(), &mut out[start..]);
    out.extend_from_slice(&tag);
}

/// Appends the opening of `nonce | ciphertext | tag` under `cipher` to
/// `out` (left as it was on error).
fn open_with(cipher: &AeadKey, sealed: &[u8], kind: Kind, out: &mut Vec<u8>) -> Result<()> {
    if sealed.len() < OVERHEAD {
        return Err(Error::Unauthentic);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    decrypt_into(cipher, nonce, kind, rest, out)
}

/// Appends the opening of `ciphertext | tag` under `cipher` and `nonce` to
/// `out` (left as it was on error).
fn decrypt_into(
    cipher: &AeadKey,
    nonce: &[u8],
    kind: Kind,
    sealed: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let start = out.len();
    out.extend_from_slice(body);
    let opened = cipher.open(nonce, &kind.aad(), &mut out[start..], tag);
    if opened.is_err() {
        out.truncate(start);
    }
    opened
}

/// One-time public keys whose agreed cipher a reader keeps (a restore
/// meets each pack's once per blob).
const OPENED_CACHE: usize = 4096;

/// An unlocked repository: seals and opens data, and names chunks. A
/// write-only key's `Keys` seal everything but open only what is sealed
/// with the index key.
pub struct Keys {
    ids: Zeroizing<[u8; 32]>,
    index: AeadKey,
    cipher: Cipher,
    public: [u8; 32],
    secret: Option<StaticSecret>,
    opened: Mutex<HashMap<[u8; 32], AeadKey>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// The keys of `material`, sealing to the repository key with `cipher`.
    #[must_use]
    pub fn new(material: &KeyMaterial, cipher: Cipher) -> Self {
        let (w, secret) = match material {
            KeyMaterial::Full(m) => (m.write_only(), Some(m.secret())),
            KeyMaterial::WriteOnly(w) => (w.clone(), None),
        };
        Self {
            ids: Zeroizing::new(w.ids),
            index: AeadKey::new(Cipher::XChaCha20Poly1305, &w.index),
            cipher,
            public: w.public,
            secret,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of a master key (full access), with the cipher of new
    /// repositories.
    #[must_use]
    pub fn full(master: &MasterKey) -> Self {
        Self::new(&KeyMaterial::Full(master.clone()), Cipher::default())
    }

    /// True when these keys open what is sealed to the repository key.
    #[must_use]
    pub fn can_read(&self) -> bool {
        self.secret.is_some()
    }

    /// The key of chunk ids (keyed BLAKE3): stored ids then say nothing
    /// about content to anyone without it.
    #[must_use]
    pub fn id_key(&self) -> &[u8; 32] {
        &self.ids
    }

    /// A new one-time key pair for one pack (or one object).
    #[must_use]
    pub fn pack_seal(&self) -> PackSeal {
        let one_time = StaticSecret::from(rand::random::<[u8; 32]>());
        let public = PublicKey::from(&one_time).to_bytes();
        let shared = Zeroizing::new(
            one_time
                .diffie_hellman(&PublicKey::from(self.public))
                .to_bytes(),
        );
        PackSeal {
            one_time: public,
            cipher: box_cipher(self.cipher, &shared, &public, &self.public),
        }
    }

    /// The cipher a one-time public key agreed, through the repository's
    /// secret key.
    fn receiver(&self, one_time: &[u8]) -> Result<AeadKey> {
        let secret = self.secret.as_ref().ok_or(Error::WriteOnly)?;
        let one_time: [u8; 32] = one_time.try_into().map_err(|_| Error::Unauthentic)?;
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = opened.get(&one_time) {
            return Ok(c.clone());
        }
        let shared = secret.diffie_hellman(&PublicKey::from(one_time));
        if !shared.was_contributory() {
            return Err(Error::Unauthentic);
        }
        let cipher = box_cipher(
            self.cipher,
            &Zeroizing::new(shared.to_bytes()),
            &one_time,
            &self.public,
        );
        if opened.len() >= OPENED_CACHE {
            opened.clear();
        }
        opened.insert(one_time, cipher.clone());
        Ok(cipher)
    }

    /// Appends `plain`, sealed as `kind` says, to `out`.
    pub fn seal_into(&self, plain: &[u8], kind: Kind, out: &mut Vec<u8>) {
        if kind.uses_index_key() {
            seal_with(&self.index, plain, kind, out);
        } else {
            let seal = self.pack_seal();
            out.extend_from_slice(&seal.one_time);
            seal_with(&seal.cipher, plain, kind, out);
        }
    }

    /// `plain`, sealed.
    #[must_use]
    pub fn seal(&self, plain: &[u8], kind: Kind) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + BOX_OVERHEAD);
        self.seal_into(plain, kind, &mut out);
        out
    }

    /// Appends the opened `sealed` to `out` (on error `out` is left as it
    /// was). Not for blobs: see [`Keys::open_blob_into`].
    ///
    /// # Errors
    /// [`Error::Unauthentic`] when it is too short or does not authenticate;
    /// [`Error::WriteOnly`] for what is sealed to the repository key when
    /// these keys are write-only.
    pub fn open_into(&self, sealed: &[u8], kind: Kind, out: &mut Vec<u8>) -> Result<()> {
        if kind.uses_index_key() {
            return open_with(&self.index, sealed, kind, out);
        }
        if sealed.len() < BOX_OVERHEAD {
            return Err(Error::Unauthentic);
        }
        let (one_time, rest) = sealed.split_at(PUBLIC_LEN);
        open_with(&self.receiver(one_time)?, rest, kind, out)
    }

    /// `sealed`, opened.
    ///
    /// # Errors
    /// As [`Keys::open_into`].
    pub fn open(&self, sealed: &[u8], kind: Kind) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(sealed.len().saturating_sub(OVERHEAD));
        self.open_into(sealed, kind, &mut out)?;
        Ok(out)
    }

    /// Appends the opened blob `stored` of chunk `id` to `out` (left as it
    /// was on error).
    ///
    /// # Errors
    /// As [`Keys::open_into`].
    pub fn open_blob_into(&self, stored: &[u8], id: &[u8; 32], out: &mut Vec<u8>) -> Result<()> {
        self.blob_opener().open_into(stored, id, out)
    }

    /// An opener for many blobs in a row: it keeps the key agreed for the
    /// last one-time key it met, which every blob of one pack shares, so a
    /// pack's blobs after the first skip the shared cache and its lock.
    #[must_use]
    pub fn blob_opener(&self) -> BlobOpener<'_> {
        BlobOpener {
            keys: self,
            last: None,
        }
    }
}

/// Opens blobs one after another (see [`Keys::blob_opener`]).
pub struct BlobOpener<'a> {
    keys: &'a Keys,
    last: Option<([u8; 32], AeadKey)>,
}

impl BlobOpener<'_> {
    /// Appends the opened blob `stored` of chunk `id` to `out` (left as it
    /// was on error).
    ///
    /// # Errors
    /// As [`Keys::open_into`].
    pub fn open_into(&mut self, stored: &[u8], id: &[u8; 32], out: &mut Vec<u8>) -> Result<()> {
        if stored.len() < BLOB_OVERHEAD {
            return Err(Error::Unauthentic);
        }
        let (one_time, rest) = stored.split_at(BLOB_HEAD);
        let key = match &self.last {
            Some((k, key)) if k.as_slice() == one_time => key,
            _ => {
                let key = self.keys.receiver(one_time)?;
                let one_time: [u8; 32] = one_time.try_into().map_err(|_| Error::Unauthentic)?;
                &self.last.insert((one_time, key)).1
            }
        };
        decrypt_into(key, blob_nonce(id), Kind::Blob, rest, out)
    }
}

/// Argon2id cost of a key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, one lane (above OWASP's Argon2id minimums; about
    /// a quarter of a second on one core).
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Bounds a reader enforces before spending memory on a key object: at
    /// least 8 MiB and at most 4 GiB, 1 to 64 passes, 1 to 16 lanes.
    ///
    /// # Errors
    /// [`Error::MalformedKey`] naming the bound.
    pub fn validate(&self) -> Result<()> {
        if !(8 * 1024..=4 * 1024 * 1024).contains(&self.memory_kib) {
            return Err(Error::MalformedKey(format!(
                "argon2 memory {} KiB is outside 8 MiB ..= 4 GiB",
                self.memory_kib
            )));
        }
        if !(1..=64).contains(&self.iterations) {
            return Err(Error::MalformedKey(format!(
                "argon2 iterations {} outside 1 ..= 64",
                self.iterations
            )));
        }
        if !(1..=16).contains(&self.parallelism) {
            return Err(Error::MalformedKey(format!(
                "argon2 parallelism {} outside 1 ..= 16",
                self.parallelism
            )));
        }
        Ok(())
    }

    fn derive(&self, password: &Password, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate()?;
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| Error::MalformedKey(format!("argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password.as_bytes(), salt, out.as_mut())
            .map_err(|e| Error::MalformedKey(format!("argon2: {e}")))?;
        Ok(out)
    }
}

/// The version of key objects this release writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
const KEY_AAD: &[u8] = b"cairn key v1";

/// A key object (`keys/<name>`): the master key, or its write-only part,
/// wrapped by a key derived from a password. Compact JSON; unknown fields
/// are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// [`KEY_FILE_VERSION`].
    pub version: u32,
    /// When it was added (RFC 3339; not interpreted).
    pub created: String,
    /// The host that added it.
    pub host: String,
    /// A label the operator chose (`key add --label`), or empty.
    #[serde(default)]
    pub label: String,
    /// What it grants (`"full"` when absent).
    #[serde(default)]
    pub access: Access,
    /// `"argon2id"`.
    pub kdf: String,
    /// Its cost.
    pub params: KdfParams,
    /// Base64 of the Argon2 salt (16 to 64 bytes).
    pub salt: String,
    /// Base64 of the key (64 bytes for a full key, 96 for a write-only
    /// one) sealed with XChaCha20-Poly1305 under the derived key: nonce,
    /// ciphertext, tag.
    pub wrapped: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl KeyFile {
    /// Wraps `material` under `password`.
    ///
    /// # Errors
    /// [`Error::MalformedKey`] for parameters outside the bounds.
    pub fn wrap(
        material: &KeyMaterial,
        password: &Password,
        params: KdfParams,
        host: &str,
        label: &str,
    ) -> Result<Self> {
        let salt: [u8; 16] = rand::random();
        let kek = params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut body = material.to_bytes().to_vec();
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), KEY_AAD, &mut body)
            .expect("invariant: 96 bytes seal");
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&body);
        wrapped.extend_from_slice(&tag);
        body.zeroize();
        Ok(Self {
            version: KEY_FILE_VERSION,
            created: chrono::Utc::now().to_rfc3339(),
            host: host.to_string(),
            label: label.to_string(),
            access: material.access(),
            kdf: "argon2id".into(),
            params,
            salt: b64().encode(salt),
            wrapped: b64().encode(wrapped),
        })
    }

    /// Parses a key object, checking every bound before any work.
    ///
    /// # Errors
    /// [`Error::MalformedKey`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > 64 * 1024 {
            return Err(Error::MalformedKey(format!("{} bytes", bytes.len())));
        }
        let k: Self =
            serde_json::from_slice(bytes).map_err(|e| Error::MalformedKey(e.to_string()))?;
        if k.version != KEY_FILE_VERSION {
            return Err(Error::MalformedKey(format!(
                "version {} (this release reads {KEY_FILE_VERSION})",
                k.version
            )));
        }
        if k.kdf != "argon2id" {
            return Err(Error::MalformedKey(format!("unknown kdf {}", k.kdf)));
        }
        k.params.validate()?;
        let salt = k.salt_bytes()?;
        if !(16..=64).contains(&salt.len()) {
            return Err(Error::MalformedKey(format!("salt of {} bytes", salt.len())));
        }
        let wrapped = k.wrapped_bytes()?;
        if wrapped.len() != KeyMaterial::wrapped_len(k.access) + OVERHEAD {
            return Err(Error::MalformedKey(format!(
                "wrapped {} key of {} bytes",
                k.access,
                wrapped.len()
            )));
        }
        Ok(k)
    }

    /// Compact JSON.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: key files serialize")
    }

    fn salt_bytes(&self) -> Result<Vec<u8>> {
        b64()
            .decode(&self.salt)
            .map_err(|e| Error::MalformedKey(format!("salt: {e}")))
    }

    fn wrapped_bytes(&self) -> Result<Vec<u8>> {
        b64()
            .decode(&self.wrapped)
            .map_err(|e| Error::MalformedKey(format!("wrapped: {e}")))
    }

    /// The key it wraps, when `password` is this key's.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] when it does not open; [`Error::MalformedKey`].
    pub fn unwrap(&self, password: &Password) -> Result<KeyMaterial> {
        let salt = self.salt_bytes()?;
        let wrapped = self.wrapped_bytes()?;
        let len = KeyMaterial::wrapped_len(self.access);
        if wrapped.len() != len + OVERHEAD {
            return Err(Error::MalformedKey("wrapped key length".into()));
        }
        let kek = self.params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
        let (nonce, rest) = wrapped.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(len);
        let mut body = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), KEY_AAD, &mut body, tag.into())
            .map_err(|_| Error::WrongPassword)?;
        KeyMaterial::from_bytes(self.access, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    const SNAPSHOTS: Kind = Kind::Object("snapshots");
    const INDEX: Kind = Kind::Object("index");

    const CIPHERS: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::XChaCha20Poly1305];

    fn full_keys(cipher: Cipher) -> Keys {
        Keys::new(&KeyMaterial::Full(MasterKey::generate()), cipher)
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for cipher in CIPHERS {
            seal_open_round_trip_and_tamper_with(cipher);
        }
    }

    fn seal_open_round_trip_and_tamper_with(cipher: Cipher) {
        let k = full_keys(cipher);
        for (kind, overhead) in [
            (SNAPSHOTS, BOX_OVERHEAD),
            (Kind::Trailer, BOX_OVERHEAD),
            (INDEX, OVERHEAD),
        ] {
            for len in [0usize, 1, 63, 4096, 100_000] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let sealed = k.seal(&plain, kind);
                assert_eq!(sealed.len(), len + overhead);
                assert_eq!(k.open(&sealed, kind).unwrap(), plain);
                // Another kind, a flipped bit, a cut: all refused.
                assert!(k.open(&sealed, Kind::Object("runs")).is_err());
                for at in [0, len / 2 + overhead - TAG_LEN, sealed.len() - 1] {
                    let mut bad = sealed.clone();
                    bad[at] ^= 1;
                    assert!(
                        k.open(&bad, kind).is_err(),
                        "{kind:?} {len} flipped at {at}"
                    );
                }
                assert!(k.open(&sealed[..sealed.len() - 1], kind).is_err());
            }
        }
        let other = full_keys(cipher);
        for kind in [SNAPSHOTS, INDEX] {
            assert!(other.open(&k.seal(b"x", kind), kind).is_err());
        }
        // Two seals of one plaintext differ (random nonces, one-time keys).
        assert_ne!(k.seal(b"same", SNAPSHOTS), k.seal(b"same", SNAPSHOTS));
        assert_ne!(k.seal(b"same", INDEX), k.seal(b"same", INDEX));
    }

    fn sealed_blob(seal: &PackSeal, plain: &[u8], id: &[u8; 32]) -> Vec<u8> {
        let mut buf = vec![0u8; BLOB_HEAD];
        buf.extend_from_slice(plain);
        buf.extend_from_slice(&[0u8; TAG_LEN]);
        seal.seal_blob_in_place(&mut buf, id);
        buf
    }

    #[test]
    fn blobs_open_with_their_id_and_move_between_packs() {
        for cipher in CIPHERS {
            blobs_open_with_their_id_and_move_between_packs_with(cipher);
        }
    }

    fn blobs_open_with_their_id_and_move_between_packs_with(cipher: Cipher) {
        let k = full_keys(cipher);
        let (a, b) = (k.pack_seal(), k.pack_seal());
        let id = blake3::hash(b"blob").into();
        let one = sealed_blob(&a, b"blob", &id);
        let two = sealed_blob(&b, b"blob", &id);
        assert_eq!(one.len(), 4 + BLOB_OVERHEAD);
        assert_ne!(one, two, "each pack has its own one-time key");
        for stored in [&one, &two] {
            let mut out = b"kept".to_vec();
            k.open_blob_into(stored, &id, &mut out).unwrap();
            assert_eq!(out, b"keptblob");
        }
        let mut out = Vec::new();
        let other_id = blake3::hash(b"other").into();
        assert!(k.open_blob_into(&one, &other_id, &mut out).is_err());
        let mut bad = one.clone();
        bad[3] ^= 1;
        assert!(k.open_blob_into(&bad, &id, &mut out).is_err());
        assert!(out.is_empty());
        // One opener across the blobs of two packs, in turn, keeps opening
        // each with its own pack's key.
        let mut opener = k.blob_opener();
        for stored in [&one, &one, &two, &one] {
            let mut out = Vec::new();
            opener.open_into(stored, &id, &mut out).unwrap();
            assert_eq!(out, b"blob");
        }
        // A blob whose head names pack `a` but whose body was sealed by
        // pack `b` does not open, even right after a good blob of `a`.
        let mut forged = two.clone();
        forged[..BLOB_HEAD].copy_from_slice(&one[..BLOB_HEAD]);
        let mut out = Vec::new();
        opener.open_into(&one, &id, &mut out).unwrap();
        assert!(opener.open_into(&forged, &id, &mut Vec::new()).is_err());
        assert!(opener.open_into(&one, &other_id, &mut Vec::new()).is_err());
        // A trailer sealed by a pack opens as any trailer.
        let mut t = Vec::new();
        a.seal_trailer_into(b"entries", &mut t);
        assert_eq!(k.open(&t, Kind::Trailer).unwrap(), b"entries");
    }

    #[test]
    fn a_repository_opens_only_with_its_own_cipher() {
        let master = MasterKey::generate();
        let aes = Keys::new(&KeyMaterial::Full(master.clone()), Cipher::Aes256Gcm);
        let chacha = Keys::new(&KeyMaterial::Full(master), Cipher::XChaCha20Poly1305);
        let id = blake3::hash(b"chunk").into();
        let blob = sealed_blob(&aes.pack_seal(), b"chunk", &id);
        let mut out = Vec::new();
        assert!(chacha.open_blob_into(&blob, &id, &mut out).is_err());
        assert!(chacha.open(&aes.seal(b"m", SNAPSHOTS), SNAPSHOTS).is_err());
        // The index key's objects are XChaCha20-Poly1305 under either.
        assert_eq!(chacha.open(&aes.seal(b"i", INDEX), INDEX).unwrap(), b"i");
        for c in CIPHERS {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
        }
        assert_eq!(Cipher::from_name("rot13"), None);
    }

    #[test]
    fn write_only_keys_seal_everything_and_open_only_the_index() {
        for cipher in CIPHERS {
            write_only_keys_seal_everything_and_open_only_the_index_with(cipher);
        }
    }

    fn write_only_keys_seal_everything_and_open_only_the_index_with(cipher: Cipher) {
        let master = MasterKey::generate();
        let full = Keys::new(&KeyMaterial::Full(master.clone()), cipher);
        let writer = Keys::new(&KeyMaterial::WriteOnly(master.write_only()), cipher);
        assert!(full.can_read() && !writer.can_read());
        assert_eq!(writer.id_key(), full.id_key());
        // What the writer seals, the full key opens.
        let manifest = writer.seal(b"manifest", SNAPSHOTS);
        assert_eq!(full.open(&manifest, SNAPSHOTS).unwrap(), b"manifest");
        let id = blake3::hash(b"chunk").into();
        let blob = sealed_blob(&writer.pack_seal(), b"chunk", &id);
        let mut out = Vec::new();
        full.open_blob_into(&blob, &id, &mut out).unwrap();
        assert_eq!(out, b"chunk");
        // The writer opens none of it, nor what the full key sealed...
        assert!(matches!(
            writer.open(&manifest, SNAPSHOTS),
            Err(Error::WriteOnly)
        ));
        assert!(matches!(
            writer.open(&full.seal(b"m", SNAPSHOTS), SNAPSHOTS),
            Err(Error::WriteOnly)
        ));
        assert!(matches!(
            writer.open_blob_into(&blob, &id, &mut out),
            Err(Error::WriteOnly)
        ));
        // ...but both read and write the index.
        assert_eq!(writer.open(&full.seal(b"i", INDEX), INDEX).unwrap(), b"i");
        assert_eq!(full.open(&writer.seal(b"j", INDEX), INDEX).unwrap(), b"j");
    }

    #[test]
    fn a_low_order_one_time_key_is_refused() {
        let k = Keys::full(&MasterKey::generate());
        let mut sealed = k.seal(b"x", SNAPSHOTS);
        sealed[..PUBLIC_LEN].fill(0);
        assert!(matches!(
            k.open(&sealed, SNAPSHOTS),
            Err(Error::Unauthentic)
        ));
    }

    #[test]
    fn key_files_open_with_their_password_only() {
        let master = MasterKey::generate();
        let pw = Password::new("correct horse".into());
        for material in [
            KeyMaterial::Full(master.clone()),
            KeyMaterial::WriteOnly(master.write_only()),
        ] {
            let f = KeyFile::wrap(&material, &pw, cheap(), "h", "ops").unwrap();
            let parsed = KeyFile::parse(&f.to_json()).unwrap();
            assert_eq!(parsed.access, material.access());
            assert_eq!(parsed.unwrap(&pw).unwrap(), material);
        }
        let f =
            KeyFile::wrap(&KeyMaterial::Full(master.clone()), &pw, cheap(), "h", "ops").unwrap();
        let parsed = KeyFile::parse(&f.to_json()).unwrap();
        // A full key relabelled write-only is refused by its length.
        let mut v: serde_json::Value = serde_json::from_slice(&f.to_json()).unwrap();
        v["access"] = serde_json::json!("write-only");
        assert!(KeyFile::parse(v.to_string().as_bytes()).is_err());
        assert!(matches!(
            parsed.unwrap(&Password::new("wrong".into())),
            Err(Error::WrongPassword)
        ));
        let json = String::from_utf8(f.to_json()).unwrap();
        assert!(!json.contains("correct horse"));
    }

    #[test]
    fn hostile_key_files_are_refused_before_any_work() {
        let f = KeyFile::wrap(
            &KeyMaterial::Full(MasterKey::generate()),
            &Password::new("p".into()),
            cheap(),
            "h",
            "",
        )
        .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&f.to_json()).unwrap();
        v["params"]["memory_kib"] = serde_json::json!(u32::MAX);
        assert!(KeyFile::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .contains("memory"));
        let mut v: serde_json::Value = serde_json::from_slice(&f.to_json()).unwrap();
        v["wrapped"] = serde_json::json!("AAAA");
        assert!(KeyFile::parse(v.to_string().as_bytes()).is_err());
        assert!(KeyFile::parse(b"{}").is_err());
        assert!(KeyFile::parse(&vec![b' '; 70_000]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..200)) {
            let k = Keys::full(&MasterKey::generate());
            proptest::prop_assert!(k.open(&bytes, SNAPSHOTS).is_err());
            proptest::prop_assert!(k.open(&bytes, INDEX).is_err());
            let mut out = Vec::new();
            proptest::prop_assert!(k.open_blob_into(&bytes, &[7; 32], &mut out).is_err());
            let _ = KeyFile::parse(&bytes);
        }
    }
}
