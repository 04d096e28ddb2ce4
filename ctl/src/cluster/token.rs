//! Join tokens, like `docker swarm join-token`: `SEGTKN-1-<CA>-<secret>`.
//!
//! - `<CA>` is the SHA-256 fingerprint of the cluster CA's certificate: the
//!   joining node checks the server it talks to against it before it sends
//!   anything, so a token cannot be used against an impostor.
//! - `<secret>` is 128 random bits. etcd keeps only its SHA-256 (the token's
//!   [`JoinToken::id`]) with an expiry, so a dump of etcd cannot be used to
//!   join; the record is deleted in the same etcd transaction that accepts
//!   it, so a token works once.

use super::ca::hex;
use zeroize::Zeroizing;

const PREFIX: &str = "SEGTKN-1-";
const SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the join token is malformed ({0}); copy the whole `SEGTKN-1-…` line `segctl cluster token` printed"
    )]
    Malformed(&'static str),
    #[error(
        "the join token was made for another cluster (its CA is {token}…, this cluster's is {ours}…); \
         make a token on a node of this cluster"
    )]
    OtherCluster { token: String, ours: String },
    #[error(
        "the join token is not valid: it was used already, or it was never issued here; make a new one with \
         `segctl cluster token`"
    )]
    Unknown,
    #[error("the join token expired {ago_s} s ago; make a new one with `segctl cluster token`")]
    Expired { ago_s: u64 },
}

pub struct JoinToken {
    fingerprint: String,
    secret: Zeroizing<String>,
}

/// Never the secret.
impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({PREFIX}{}-…)", &self.fingerprint[..12])
    }
}

impl JoinToken {
    /// A fresh token for the cluster whose CA has `fingerprint`.
    pub fn generate(fingerprint: &str) -> JoinToken {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
            .expect("the system RNG works");
        JoinToken { fingerprint: fingerprint.to_owned(), secret: Zeroizing::new(hex(bytes.as_ref())) }
    }

    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed("it does not start with SEGTKN-1-"))?;
        let (fingerprint, secret) = rest.split_once('-').ok_or(TokenError::Malformed("no secret part"))?;
        let is_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(fingerprint, 64) {
            return Err(TokenError::Malformed("the CA fingerprint is not 64 hex digits"));
        }
        if !is_hex(secret, SECRET_BYTES * 2) {
            return Err(TokenError::Malformed("the secret is not 32 hex digits"));
        }
        Ok(JoinToken {
            fingerprint: fingerprint.to_ascii_lowercase(),
            secret: Zeroizing::new(secret.to_ascii_lowercase()),
        })
    }

    /// The CA fingerprint the token pins.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What etcd keeps for it: SHA-256 of the secret, hex.
    pub fn id(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, self.secret.as_bytes()).as_ref())
    }

    /// The token as the user copies it (printed once, never logged).
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PREFIX}{}-{}", self.fingerprint, self.secret.as_str()))
    }

    /// Refuses a token of another cluster.
    pub fn check_cluster(&self, ours: &str) -> Result<(), TokenError> {
        if self.fingerprint == ours {
            return Ok(());
        }
        Err(TokenError::OtherCluster {
            token: self.fingerprint[..12].to_owned(),
            ours: ours[..12].to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_token_round_trips_and_hides_its_secret() {
        let token = JoinToken::generate(FP);
        let text = token.reveal();
        assert!(text.starts_with("SEGTKN-1-0011") && text.len() == 9 + 64 + 1 + 32, "{}", *text);
        let again = JoinToken::parse(&text).unwrap();
        assert_eq!((again.id(), again.fingerprint()), (token.id(), FP));
        let shown = format!("{token:?}");
        assert!(!shown.contains(&text[9 + 65..]), "{shown}");
        assert_ne!(JoinToken::generate(FP).id(), token.id());
    }

    #[test]
    fn malformed_and_foreign_tokens_say_what_is_wrong() {
        let err = |t: &str| JoinToken::parse(t).unwrap_err().to_string();
        assert!(err("SWMTKN-1-abc").contains("does not start with SEGTKN-1-"));
        assert!(err("SEGTKN-1-abc").contains("no secret part"));
        assert!(err(&format!("SEGTKN-1-{}-00", &FP[..60])).contains("64 hex digits"));
        assert!(err(&format!("SEGTKN-1-{FP}-zz")).contains("32 hex digits"));
        let token = JoinToken::generate(FP);
        let other = "ff".repeat(32);
        let refused = token.check_cluster(&other).unwrap_err().to_string();
        assert!(refused.contains("another cluster") && refused.contains("001122334455…"), "{refused}");
        token.check_cluster(FP).unwrap();
    }
}
