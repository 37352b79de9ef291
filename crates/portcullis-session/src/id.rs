//! Session ids and the keys stores file them under.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The secret a browser presents: 256 random bits, base64url (43 characters).
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

/// What stores index by: SHA-256 of the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub [u8; 32]);

impl SessionId {
    pub fn generate() -> Self {
        SessionId(portcullis_core::random::token())
    }

    /// Accepts a cookie value only if it has the exact shape of an id Portcullis minted,
    /// so junk never reaches a store.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD
                .decode(value)
                .is_ok_and(|raw| raw.len() == 32);
        well_formed.then(|| SessionId(value.to_string()))
    }

    /// The cookie value. Only the cookie codec should need this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> SessionKey {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        SessionKey(key)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionKey {
    /// Lowercase hex, for use as a store key.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_hash_stably() {
        let id = SessionId::generate();
        let again = SessionId::parse(id.expose()).expect("own ids parse");
        assert_eq!(id.key(), again.key());
        assert_ne!(id.key(), SessionId::generate().key());
    }

    #[test]
    fn malformed_cookie_values_are_refused() {
        let good = SessionId::generate();
        let mut too_long = good.expose().to_string();
        too_long.push('A');
        for bad in [
            "",
            "short",
            too_long.as_str(),
            &good.expose().replace(|_c: char| true, "!"),
            "../../../../../../../../../../../../etc/passwd",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(SessionId::parse(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_id() {
        let id = SessionId::generate();
        assert!(!format!("{id:?}").contains(id.expose()));
    }
}
