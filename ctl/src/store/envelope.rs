//! Envelope encryption for the cluster store: every secret version is sealed
//! with its own fresh data key (DEK), and only the DEK, wrapped by the
//! cluster's key-encryption key (KEK), is stored next to it. etcd holds the
//! envelope and never a key; the KEK stays on the nodes.
//!
//! An envelope is
//! `"seg:enc:v1:" || kek_id (8) || wrap nonce (12) || wrapped DEK (32 + 16 tag)
//!  || data nonce (12) || ciphertext || tag (16)`,
//! all AES-256-GCM (ring). The prefix names the format, like Kubernetes'
//! `k8s:enc:kms:v2:`, and the KEK id says which KEK wrapped the DEK, so a
//! later KEK rotation can open old envelopes with the old KEK while sealing
//! new ones with the new KEK. Both seals bind `name` and `version` as
//! associated data (the wrap also binds the KEK id): an envelope copied to
//! another secret or version, or a DEK swapped between envelopes, fails to
//! open. Nonces are random: every DEK seals exactly one value, and the KEK
//! wraps one DEK per version written, far below the 2^32 random-nonce bound.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::fmt;

/// The format prefix of every envelope.
pub const PREFIX: &[u8] = b"seg:enc:v1:";
/// Length of a KEK and of a DEK.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const KEK_ID_LEN: usize = 8;
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
const HEADER_LEN: usize = PREFIX.len() + KEK_ID_LEN + WRAPPED_LEN;
/// Bytes an envelope has beyond its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Why an envelope was not made or not opened. No variant carries key or
/// value bytes; KEK ids are public fingerprints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("a key-encryption key must be {KEY_LEN} bytes, got {0}")]
    BadKeyLength(usize),
    #[error("it is not a seg envelope (no \"seg:enc:v1:\" prefix)")]
    NotEnvelope,
    #[error("the envelope is {0} bytes, shorter than its header and tag")]
    TooShort(usize),
    #[error(
        "it was wrapped by key-encryption key {found}, but this node has KEK {expected}: the node holds \
         another cluster's key; give it this cluster's KEK"
    )]
    KekMismatch { found: String, expected: String },
    #[error(
        "fails authentication: it was altered, copied from another secret or version, or wrapped by \
         another key-encryption key"
    )]
    Auth,
    #[error("the system random number generator failed")]
    Random,
    #[error("the value is too large to seal")]
    TooLarge,
}

/// The cluster's key-encryption key. It lives only inside ring's key
/// schedule (the bytes it was made from stay in the caller's
/// `SecretBytes`); `Debug` shows the public id, never the key.
pub struct Kek {
    key: LessSafeKey,
    id: [u8; KEK_ID_LEN],
    rng: SystemRandom,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(id {})", self.id())
    }
}

impl Kek {
    pub fn from_secret(bytes: &SecretBytes) -> Result<Kek, EnvelopeError> {
        let raw = bytes.expose();
        let key = aes_key(raw)?;
        let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw), b"seg kek id v1");
        let mut id = [0u8; KEK_ID_LEN];
        id.copy_from_slice(&mac.as_ref()[..KEK_ID_LEN]);
        Ok(Kek { key, id, rng: SystemRandom::new() })
    }

    /// 32 fresh random bytes for a new KEK (or a DEK).
    pub fn random_bytes() -> Result<SecretBytes, EnvelopeError> {
        let mut bytes = SecretBytes::zeroed(KEY_LEN);
        SystemRandom::new().fill(bytes.as_mut_bytes()).map_err(|_| EnvelopeError::Random)?;
        Ok(bytes)
    }

    /// The public fingerprint of the KEK, in hex (HMAC-SHA256 of a fixed
    /// label under the key, first 8 bytes): tells a wrong KEK from damage.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// Seals `value` as version `version` of `name` under a fresh DEK.
    pub fn seal(
        &self,
        name: &SecretName,
        version: u64,
        value: &SecretBytes,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let dek_bytes = Kek::random_bytes()?;
        let dek = aes_key(dek_bytes.expose())?;
        let mut out = Vec::with_capacity(OVERHEAD + value.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&self.id);
        // Wrap the DEK inside a locked copy, so it never sits in a Vec in clear.
        let mut wrapped = dek_bytes.duplicate();
        let aad = wrap_aad(name, version, &self.id);
        self.seal_in(&self.key, &aad, &mut wrapped, &mut out)?;
        let mut body = value.duplicate();
        self.seal_in(&dek, &data_aad(name, version), &mut body, &mut out)?;
        Ok(out)
    }

    /// Opens an envelope made by [`Kek::seal`] for the same name and version.
    pub fn open(&self, name: &SecretName, version: u64, sealed: &[u8]) -> Result<SecretBytes, EnvelopeError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(EnvelopeError::NotEnvelope)?;
        if sealed.len() < OVERHEAD {
            return Err(EnvelopeError::TooShort(sealed.len()));
        }
        let (id, rest) = rest.split_at(KEK_ID_LEN);
        if id != self.id {
            return Err(EnvelopeError::KekMismatch { found: hex(id), expected: self.id() });
        }
        let (wrapped, data) = rest.split_at(WRAPPED_LEN);
        // The DEK is unwrapped into a wiped stack buffer, not a locked page:
        // its key schedule (`dek`) is on the stack the same way, like the
        // KEK's in ring, and a page per read cost more than the decryption.
        let (nonce, body) = wrapped.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::TooShort(sealed.len()))?;
        let mut dek_bytes = zeroize::Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
        dek_bytes.copy_from_slice(body);
        let aad = wrap_aad(name, version, &self.id);
        let raw = self
            .key
            .open_in_place(nonce, Aad::from(&aad[..]), &mut dek_bytes[..])
            .map_err(|_| EnvelopeError::Auth)?;
        let dek = aes_key(raw)?;
        open_in(&dek, &data_aad(name, version), data)
    }

    /// Seals `buf` in place with a fresh nonce and appends
    /// `nonce || ciphertext || tag` to `out`.
    fn seal_in(
        &self,
        key: &LessSafeKey,
        aad: &[u8],
        buf: &mut SecretBytes,
        out: &mut Vec<u8>,
    ) -> Result<(), EnvelopeError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                buf.as_mut_bytes(),
            )
            .map_err(|_| EnvelopeError::TooLarge)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(buf.expose());
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Opens `nonce || ciphertext || tag` into a locked buffer of exactly the
/// plaintext's size; the scratch copy is wiped on drop.
fn open_in(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, EnvelopeError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::TooShort(sealed.len()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::TooShort(sealed.len()))?;
    // Decrypted in place; the tag's room is cut off (one locked page, not two).
    let mut plain = SecretBytes::from_slice(body);
    let len = key
        .open_in_place(nonce, Aad::from(aad), plain.as_mut_bytes())
        .map_err(|_| EnvelopeError::Auth)?
        .len();
    plain.truncate(len);
    Ok(plain)
}

fn aes_key(raw: &[u8]) -> Result<LessSafeKey, EnvelopeError> {
    if raw.len() != KEY_LEN {
        return Err(EnvelopeError::BadKeyLength(raw.len()));
    }
    let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| EnvelopeError::BadKeyLength(raw.len()))?;
    Ok(LessSafeKey::new(unbound))
}

fn data_aad(name: &SecretName, version: u64) -> Vec<u8> {
    bound(b"seg-env-data-v1\0", name, version)
}

fn wrap_aad(name: &SecretName, version: u64, kek_id: &[u8]) -> Vec<u8> {
    let mut aad = bound(b"seg-env-wrap-v1\0", name, version);
    aad.extend_from_slice(kek_id);
    aad
}

/// `label || name || "\0" || version (u64 big-endian)`: names cannot hold
/// a NUL, so no two (name, version) pairs give the same bytes.
fn bound(label: &[u8], name: &SecretName, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + name.as_str().len() + 1 + 8 + KEK_ID_LEN);
    aad.extend_from_slice(label);
    aad.extend_from_slice(name.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
