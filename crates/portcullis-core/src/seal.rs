//! Authenticated encryption of small records that leave the process: the login-state
//! cookie, and session records in a shared store.
//!
//! AES-256-GCM with a fresh 96-bit random nonce per record (NIST SP 800-38D §8.2.2 allows
//! random nonces up to 2^32 messages per key). Keys are derived with HKDF-SHA256 from the
//! operator's secret and a purpose string, so one secret never keys two different uses.
//! Several secrets may be given: the first seals, every one opens (key rotation). The
//! associated data binds a record to where it belongs (a cookie name, a store key), so a
//! sealed value cannot be moved elsewhere.
//!
//! Wire format: base64url( nonce(12) || ciphertext || tag(16) ).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const SALT: &[u8] = b"portcullis seal v1";

pub struct Sealer {
    keys: Vec<LessSafeKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys, [redacted])", self.keys.len())
    }
}

impl Sealer {
    /// Derives one key per secret for `purpose`. The first secret seals.
    ///
    /// # Panics
    /// If `secrets` is empty: there would be nothing to seal with. Configuration
    /// validation guarantees at least one secret before this is called.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], purpose: &str) -> Self {
        assert!(!secrets.is_empty(), "a Sealer needs at least one secret");
        let salt = Salt::new(HKDF_SHA256, SALT);
        let keys = secrets
            .iter()
            .map(|secret| {
                let prk = salt.extract(secret.as_ref());
                let info = [purpose.as_bytes()];
                let okm = prk
                    .expand(&info, &AES_256_GCM)
                    .expect("HKDF output of one AES-256 key length is always valid");
                LessSafeKey::new(UnboundKey::from(okm))
            })
            .collect();
        Sealer { keys }
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> String {
        let nonce_bytes = crate::random::bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.keys[0]
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut buf,
            )
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext, or `None` if `sealed` was not sealed by one of our keys for `aad`
    /// (tampered, truncated, forged, or moved from elsewhere).
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.keys.iter().find_map(|key| {
            let mut buf = body.to_vec();
            key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .ok()
            .map(|plain| plain.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_the_same_key_purpose_and_aad() {
        let sealer = Sealer::new(&["secret-one-secret-one-secret-one"], "login");
        let sealed = sealer.seal(b"cookie-a", b"hello");
        assert_eq!(
            sealer.open(b"cookie-a", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            sealer.open(b"cookie-b", &sealed),
            None,
            "moved to another name"
        );
        let other_purpose = Sealer::new(&["secret-one-secret-one-secret-one"], "session");
        assert_eq!(other_purpose.open(b"cookie-a", &sealed), None);
        let other_secret = Sealer::new(&["secret-two-secret-two-secret-two"], "login");
        assert_eq!(other_secret.open(b"cookie-a", &sealed), None);
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let sealer = Sealer::new(&["k".repeat(32)], "login");
        let sealed = sealer.seal(b"", b"some plaintext of a cookie");
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                sealer.open(b"", &URL_SAFE_NO_PAD.encode(&bad)),
                None,
                "byte {i}"
            );
        }
        for junk in ["", "!!!", "AAAA", &sealed[..sealed.len() - 2]] {
            assert_eq!(sealer.open(b"", junk), None);
        }
    }

    #[test]
    fn a_rotated_secret_still_opens_old_records_and_seals_with_the_new_one() {
        let old = Sealer::new(&["old".repeat(11)], "s");
        let rotated = Sealer::new(&["new".repeat(11), "old".repeat(11)], "s");
        let by_old = old.seal(b"k", b"v");
        assert_eq!(rotated.open(b"k", &by_old).as_deref(), Some(&b"v"[..]));
        let by_new = rotated.seal(b"k", b"v");
        assert_eq!(old.open(b"k", &by_new), None);
    }

    #[test]
    fn nonces_differ_between_seals() {
        let sealer = Sealer::new(&["k".repeat(32)], "s");
        assert_ne!(sealer.seal(b"", b"same"), sealer.seal(b"", b"same"));
    }
}
