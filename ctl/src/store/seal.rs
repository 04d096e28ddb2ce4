//! Sealing secret values with AES-256-GCM under the node's master key, and
//! the master key file itself.
//!
//! A sealed blob is `nonce (12) || ciphertext || tag (16)`. The nonce is
//! fresh from the system RNG for every seal (random 96-bit nonces are safe
//! far beyond the number of versions a node will ever write). The associated
//! data is `"seg-v1\0" || name || "\0" || version (u64 big-endian)`, so a
//! blob copied to another secret or another version does not open.

use super::{disk, StoreError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use seg_common::name::SecretName;
use seg_common::secret::SecretBytes;
use std::fmt;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Length of the master key in bytes.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob has beyond its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be {KEY_LEN} bytes, got {0}")]
    BadKeyLength(usize),
    #[error("the sealed value is {0} bytes, shorter than a nonce and a tag")]
    TooShort(usize),
    #[error(
        "fails authentication: it was altered, copied from another secret or version, \
         or sealed under another master key"
    )]
    Auth,
    #[error("the system random number generator failed")]
    Random,
    #[error("the value is too large to seal")]
    TooLarge,
}

/// The node's AES-256-GCM key. It lives only inside ring's key schedule;
/// `Debug` shows the public key id, never the key.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
    rng: SystemRandom,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id)
    }
}

impl MasterKey {
    pub fn from_secret(bytes: &SecretBytes) -> Result<MasterKey, SealError> {
        let raw = bytes.expose();
        if raw.len() != KEY_LEN {
            return Err(SealError::BadKeyLength(raw.len()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| SealError::BadKeyLength(raw.len()))?;
        Ok(MasterKey { key: LessSafeKey::new(unbound), id: key_id(raw), rng: SystemRandom::new() })
    }

    /// 32 fresh random bytes for a new master key.
    pub fn random_bytes() -> Result<SecretBytes, SealError> {
        let mut bytes = SecretBytes::zeroed(KEY_LEN);
        SystemRandom::new().fill(bytes.as_mut_bytes()).map_err(|_| SealError::Random)?;
        Ok(bytes)
    }

    /// A public fingerprint of the key (HMAC-SHA256 of a fixed label, first
    /// 8 bytes in hex). Stored next to sealed data so a wrong key is told
    /// apart from a damaged file.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seal(&self, name: &SecretName, version: u64, value: &SecretBytes) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        // Encrypt inside a locked copy, so the plaintext never sits in a Vec.
        let mut scratch = value.duplicate();
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name, version)),
                scratch.as_mut_bytes(),
            )
            .map_err(|_| SealError::TooLarge)?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + value.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(scratch.expose());
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub fn open(&self, name: &SecretName, version: u64, sealed: &[u8]) -> Result<SecretBytes, SealError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::TooShort(sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::TooShort(sealed.len()))?;
        // Decrypt in place inside a locked buffer and cut the tag's room
        // off (wiped at once): one locked page per read, not two.
        let mut plain = SecretBytes::from_slice(body);
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad(name, version)), plain.as_mut_bytes())
            .map_err(|_| SealError::Auth)?
            .len();
        plain.truncate(len);
        Ok(plain)
    }

    /// Loads `path`, or creates it with a new random key when it does not
    /// exist and `sealed_files` is 0. A missing key next to sealed files is
    /// an error: a new key could never open them.
    pub fn load_or_create(path: &Path, sealed_files: usize) -> Result<MasterKey, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => return load(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(disk::io_err("inspecting master key", path)(e)),
        }
        if sealed_files > 0 {
            let why = format!(
                "it is missing but {sealed_files} sealed secret file(s) exist; restore master.key from your \
                 backup (a new key could not decrypt them)"
            );
            return Err(disk::io_err("loading master key", path)(io::Error::new(
                io::ErrorKind::NotFound,
                why,
            )));
        }
        create(path)
    }
}

fn aad(name: &SecretName, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(7 + name.as_str().len() + 1 + 8);
    aad.extend_from_slice(b"seg-v1\0");
    aad.extend_from_slice(name.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn key_id(raw: &[u8]) -> String {
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw), b"seg master key id v1");
    mac.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads an existing key file: exactly 32 bytes, mode 0600 (no group or
/// other bits), owned by us, not a symlink.
fn load(path: &Path) -> Result<MasterKey, StoreError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(disk::io_err("opening master key", path))?;
    let meta = file.metadata().map_err(disk::io_err("inspecting master key", path))?;
    disk::check_private_file(path, &meta)?;
    if !meta.is_file() || meta.len() != KEY_LEN as u64 {
        let reason = format!(
            "it is {} bytes, but a master key is exactly {KEY_LEN} bytes; restore master.key from your backup \
             (the secrets sealed with it cannot be read without it)",
            meta.len()
        );
        return Err(StoreError::Corrupt { path: path.to_path_buf(), reason });
    }
    let mut bytes = SecretBytes::zeroed(KEY_LEN);
    io::Read::read_exact(&mut file, bytes.as_mut_bytes())
        .map_err(disk::io_err("reading master key", path))?;
    MasterKey::from_secret(&bytes)
        .map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

/// Writes a new key to a temp file (0600, fsynced) and hard-links it into
/// place: the key appears complete or not at all, and a concurrent creator
/// loses cleanly (`link` fails if the name exists).
fn create(path: &Path) -> Result<MasterKey, StoreError> {
    let bytes = MasterKey::random_bytes()
        .map_err(|e| disk::io_err("creating master key", path)(io::Error::other(e)))?;
    let key = MasterKey::from_secret(&bytes).expect("fresh key has the right length");
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().map_or("master.key".into(), |n| n.to_string_lossy());
    let tmp = disk::temp_path(dir, &file_name);
    disk::write_new(&tmp, bytes.expose())?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            disk::fsync_dir(dir)?;
            tracing::info!(path = %path.display(), id = key.id(), "created a new master key; back it up separately");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(disk::io_err("creating master key", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    fn key() -> MasterKey {
        MasterKey::from_secret(&MasterKey::random_bytes().unwrap()).unwrap()
    }

    #[test]
    fn seal_open_roundtrip_and_fresh_nonces() {
        let k = key();
        let v = SecretBytes::from_slice(b"s3cret value");
        let a = k.seal(&name("db"), 1, &v).unwrap();
        let b = k.seal(&name("db"), 1, &v).unwrap();
        assert_ne!(a, b, "each seal must use a fresh nonce");
        assert_eq!(a.len(), v.len() + SEAL_OVERHEAD);
        assert!(k.open(&name("db"), 1, &a).unwrap().ct_eq(b"s3cret value"));
        let empty = k.seal(&name("db"), 1, &SecretBytes::zeroed(0)).unwrap();
        assert!(k.open(&name("db"), 1, &empty).unwrap().is_empty());
    }

    #[test]
    fn any_flipped_byte_fails() {
        let k = key();
        let sealed = k.seal(&name("db"), 1, &SecretBytes::from_slice(b"value")).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(matches!(k.open(&name("db"), 1, &bad), Err(SealError::Auth)), "byte {i}");
        }
        assert!(matches!(k.open(&name("db"), 1, &sealed[..10]), Err(SealError::TooShort(10))));
    }

    #[test]
    fn blob_bound_to_name_version_and_key() {
        let k = key();
        let sealed = k.seal(&name("db"), 2, &SecretBytes::from_slice(b"value")).unwrap();
        assert!(matches!(k.open(&name("dc"), 2, &sealed), Err(SealError::Auth)));
        assert!(matches!(k.open(&name("db"), 1, &sealed), Err(SealError::Auth)));
        assert!(matches!(k.open(&name("db"), 3, &sealed), Err(SealError::Auth)));
        assert!(matches!(key().open(&name("db"), 2, &sealed), Err(SealError::Auth)));
    }

    #[test]
    fn debug_and_id_do_not_show_the_key() {
        let raw = MasterKey::random_bytes().unwrap();
        let k = MasterKey::from_secret(&raw).unwrap();
        let hex: String = raw.expose().iter().map(|b| format!("{b:02x}")).collect();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex[..16]) && !hex.contains(k.id()), "{shown}");
        assert_eq!(k.id().len(), 16);
        assert!(matches!(MasterKey::from_secret(&SecretBytes::zeroed(31)), Err(SealError::BadKeyLength(31))));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::load_or_create(&path, 0).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left behind");
        let again = MasterKey::load_or_create(&path, 0).unwrap();
        assert_eq!(first.id(), again.id());
    }

    #[test]
    fn key_file_with_bad_mode_or_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path, 0).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create(&path, 0).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = MasterKey::load_or_create(&path, 0).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }) && err.to_string().contains("exactly 32 bytes"),
            "{err}"
        );
    }

    #[test]
    fn missing_key_next_to_sealed_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let err = MasterKey::load_or_create(&path, 3).unwrap_err().to_string();
        assert!(err.contains("restore master.key"), "{err}");
        assert!(!path.exists());
    }
}
