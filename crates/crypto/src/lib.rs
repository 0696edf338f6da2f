//! Encryption of repository data: the master key, sealing and opening of
//! objects and blobs (XChaCha20-Poly1305), keyed chunk ids, and key objects
//! that wrap the master key with a password (Argon2id).
//!
//! A sealed byte string is `nonce [24] | ciphertext | tag [16]`: a random
//! 192-bit nonce per seal (so no counter has to be kept across processes
//! and hosts), authenticated together with associated data that names what
//! kind of object it is. See docs/format.md, Encryption, and
//! docs/threat-model.md.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod password;
pub use password::{Password, PasswordSource};

/// Bytes of the random nonce in front of every sealed string.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag at its end.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a byte string.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Authentication failed: the bytes were changed, truncated, or sealed
    /// with another key or for another kind of object.
    #[error("does not decrypt: damaged, or written with another key")]
    Unauthentic,
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

/// The repository's secret: one key for the cipher, one for chunk ids.
/// Zeroed when dropped.
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

    fn to_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut b = Zeroizing::new([0u8; 64]);
        b[..32].copy_from_slice(&self.data);
        b[32..].copy_from_slice(&self.ids);
        b
    }

    fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 64 {
            return Err(Error::MalformedKey(format!(
                "wrapped key is {} bytes, expected 64",
                b.len()
            )));
        }
        let mut k = Self {
            data: [0; 32],
            ids: [0; 32],
        };
        k.data.copy_from_slice(&b[..32]);
        k.ids.copy_from_slice(&b[32..]);
        Ok(k)
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
}

/// An unlocked repository: seals and opens data, and names chunks.
#[derive(Clone)]
pub struct Keys {
    cipher: XChaCha20Poly1305,
    ids: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// The keys of `master`.
    #[must_use]
    pub fn new(master: &MasterKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new((&master.data).into()),
            ids: Zeroizing::new(master.ids),
        }
    }

    /// The key of chunk ids (keyed BLAKE3): stored ids then say nothing
    /// about content to anyone without it.
    #[must_use]
    pub fn id_key(&self) -> &[u8; 32] {
        &self.ids
    }

    /// Appends `plain`, sealed, to `out`.
    pub fn seal_into(&self, plain: &[u8], kind: Kind, out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        out.reserve(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &kind.aad(), &mut out[start..])
            .expect("invariant: XChaCha20-Poly1305 seals any length below 256 GiB");
        out.extend_from_slice(&tag);
    }

    /// Seals in place: `buf` is [`NONCE_LEN`] bytes of room, the
    /// plaintext, then [`TAG_LEN`] bytes of room (what a writer reserved
    /// around it), and becomes the sealed string. Lets a pack be written
    /// plain on the thread that cuts chunks and sealed later elsewhere,
    /// without a copy.
    ///
    /// # Panics
    /// If `buf` is shorter than [`OVERHEAD`].
    pub fn seal_in_place(&self, buf: &mut [u8], kind: Kind) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let (head, rest) = buf.split_at_mut(NONCE_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tail) = rest.split_at_mut(body_len);
        head.copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &kind.aad(), body)
            .expect("invariant: XChaCha20-Poly1305 seals any length below 256 GiB");
        tail.copy_from_slice(&tag);
    }

    /// `plain`, sealed.
    #[must_use]
    pub fn seal(&self, plain: &[u8], kind: Kind) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        self.seal_into(plain, kind, &mut out);
        out
    }

    /// Appends the opened `sealed` to `out` (on error `out` is left as it
    /// was).
    ///
    /// # Errors
    /// [`Error::Unauthentic`] when it is too short or does not authenticate.
    pub fn open_into(&self, sealed: &[u8], kind: Kind, out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < OVERHEAD {
            return Err(Error::Unauthentic);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let start = out.len();
        out.extend_from_slice(body);
        match self.cipher.decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &kind.aad(),
            &mut out[start..],
            tag.into(),
        ) {
            Ok(()) => Ok(()),
            Err(_) => {
                out.truncate(start);
                Err(Error::Unauthentic)
            }
        }
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

/// A key object (`keys/<name>`): the master key wrapped by a key derived
/// from a password. Compact JSON; unknown fields are ignored.
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
    /// `"argon2id"`.
    pub kdf: String,
    /// Its cost.
    pub params: KdfParams,
    /// Base64 of the Argon2 salt (16 to 64 bytes).
    pub salt: String,
    /// Base64 of the master key (64 bytes) sealed with XChaCha20-Poly1305
    /// under the derived key: nonce, ciphertext, tag.
    pub wrapped: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl KeyFile {
    /// Wraps `master` under `password`.
    ///
    /// # Errors
    /// [`Error::MalformedKey`] for parameters outside the bounds.
    pub fn wrap(
        master: &MasterKey,
        password: &Password,
        params: KdfParams,
        host: &str,
        label: &str,
    ) -> Result<Self> {
        let salt: [u8; 16] = rand::random();
        let kek = params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut body = master.to_bytes().to_vec();
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), KEY_AAD, &mut body)
            .expect("invariant: 64 bytes seal");
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&body);
        wrapped.extend_from_slice(&tag);
        body.zeroize();
        Ok(Self {
            version: KEY_FILE_VERSION,
            created: chrono::Utc::now().to_rfc3339(),
            host: host.to_string(),
            label: label.to_string(),
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
        if wrapped.len() != 64 + OVERHEAD {
            return Err(Error::MalformedKey(format!(
                "wrapped key of {} bytes",
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

    /// The master key, when `password` is this key's.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] when it does not open; [`Error::MalformedKey`].
    pub fn unwrap(&self, password: &Password) -> Result<MasterKey> {
        let salt = self.salt_bytes()?;
        let wrapped = self.wrapped_bytes()?;
        if wrapped.len() != 64 + OVERHEAD {
            return Err(Error::MalformedKey("wrapped key length".into()));
        }
        let kek = self.params.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
        let (nonce, rest) = wrapped.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(64);
        let mut body = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), KEY_AAD, &mut body, tag.into())
            .map_err(|_| Error::WrongPassword)?;
        MasterKey::from_bytes(&body)
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

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Keys::new(&MasterKey::generate());
        for len in [0usize, 1, 63, 4096, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = k.seal(&plain, Kind::Blob);
            assert_eq!(sealed.len(), len + OVERHEAD);
            assert_eq!(k.open(&sealed, Kind::Blob).unwrap(), plain);
            // Another kind, a flipped bit, a cut: all refused.
            assert!(k.open(&sealed, Kind::Trailer).is_err());
            let mut bad = sealed.clone();
            bad[len / 2 + NONCE_LEN] ^= 1;
            assert!(matches!(k.open(&bad, Kind::Blob), Err(Error::Unauthentic)));
            assert!(k.open(&sealed[..sealed.len() - 1], Kind::Blob).is_err());
        }
        // Sealed in place, it opens the same way.
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"in place");
        buf.extend_from_slice(&[0u8; TAG_LEN]);
        k.seal_in_place(&mut buf, Kind::Blob);
        assert_eq!(k.open(&buf, Kind::Blob).unwrap(), b"in place");
        let other = Keys::new(&MasterKey::generate());
        assert!(other.open(&k.seal(b"x", Kind::Blob), Kind::Blob).is_err());
        // Two seals of one plaintext differ (random nonces).
        assert_ne!(k.seal(b"same", Kind::Blob), k.seal(b"same", Kind::Blob));
    }

    #[test]
    fn key_files_open_with_their_password_only() {
        let master = MasterKey::generate();
        let pw = Password::new("correct horse".into());
        let f = KeyFile::wrap(&master, &pw, cheap(), "h", "ops").unwrap();
        let parsed = KeyFile::parse(&f.to_json()).unwrap();
        assert_eq!(parsed.unwrap(&pw).unwrap(), master);
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
            &MasterKey::generate(),
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
            let k = Keys::new(&MasterKey::generate());
            proptest::prop_assert!(k.open(&bytes, Kind::Blob).is_err());
            let _ = KeyFile::parse(&bytes);
        }
    }
}
