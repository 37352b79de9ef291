//! Session ids and the keys stores file them under.

use std::fmt;

/// The base64url digits whose value is a multiple of 4.
const CANONICAL_LAST: &[u8] = b"AEIMQUYcgkosw048";

/// The characters of an id: 256 bits in base64url without padding.
const ID_LEN: usize = 43;

/// Whether `b` is a base64url digit: comparisons only, no lookup or early exit, so that
/// a check of every byte of an id becomes a few vector instructions.
fn base64url(b: u8) -> bool {
    b.is_ascii_uppercase() | b.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'-') | (b == b'_')
}

/// Which bytes may end an id (see [`SessionId::from_bytes`]).
static CANONICAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < CANONICAL_LAST.len() {
        table[CANONICAL_LAST[i] as usize] = true;
        i += 1;
    }
    table
};

/// The secret a browser presents: 256 random bits, base64url (43 characters), held
/// inline so that reading one from a request allocates nothing. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

/// What stores index by: SHA-256 of the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub [u8; 32]);

impl SessionId {
    pub fn generate() -> Self {
        let token = portcullis_core::random::token();
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(
            token
                .as_bytes()
                .get(..ID_LEN)
                .expect("a token is 43 characters"),
        );
        SessionId(id)
    }

    /// Accepts a cookie value only if it has the exact shape of an id Portcullis minted,
    /// so junk never reaches a store.
    pub fn parse(value: &str) -> Option<Self> {
        Self::from_bytes(value.as_bytes())
    }

    /// [`SessionId::parse`] of a cookie value's bytes, whatever they are: only base64url
    /// digits are accepted, so the value need not be checked for UTF-8 first.
    pub fn from_bytes(value: &[u8]) -> Option<Self> {
        // 43 base64url characters carry 258 bits; the last one's low two bits are the
        // padding of 256 and must be zero, as the canonical decoder requires (its value
        // is a multiple of 4). That is the whole check of a decode, without decoding.
        let id: [u8; ID_LEN] = value.try_into().ok()?;
        let digits = id.iter().fold(true, |all, &b| all & base64url(b));
        let well_formed = digits && CANONICAL[usize::from(id[ID_LEN - 1])];
        well_formed.then_some(SessionId(id))
    }

    /// The cookie value. Only the cookie codec should need this.
    pub fn expose(&self) -> &str {
        // Only base64url characters ever get in (see `parse` and `generate`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn key(&self) -> SessionKey {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
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
        to_hex(&self.0)
    }

    /// Reads back [`SessionKey::to_hex`]; `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        from_hex(hex).map(SessionKey)
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads back exactly `N` bytes of [`to_hex`]; `None` for anything else (uppercase
/// included, so one value has one spelling).
pub(crate) fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn generated_ids_parse_back_and_hash_stably() {
        let id = SessionId::generate();
        let again = SessionId::parse(id.expose()).expect("own ids parse");
        assert_eq!(id.key(), again.key());
        assert_ne!(id.key(), SessionId::generate().key());
    }

    #[test]
    fn the_shape_check_agrees_with_the_decoder() {
        let id = SessionId::generate();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.";
        for last in alphabet.chars() {
            let mut value = id.expose()[..42].to_string();
            value.push(last);
            let decodes = URL_SAFE_NO_PAD
                .decode(&value)
                .is_ok_and(|raw| raw.len() == 32);
            assert_eq!(SessionId::parse(&value).is_some(), decodes, "{value}");
        }
    }

    #[test]
    fn every_ascii_character_inside_an_id_is_judged_as_the_decoder_does() {
        let id = SessionId::generate();
        for c in (0u8..128).map(char::from) {
            let mut value = id.expose().to_string();
            value.replace_range(5..6, &c.to_string());
            let decodes = URL_SAFE_NO_PAD
                .decode(&value)
                .is_ok_and(|raw| raw.len() == 32);
            assert_eq!(SessionId::parse(&value).is_some(), decodes, "{c:?}");
        }
    }

    #[test]
    fn every_byte_inside_or_at_the_end_of_an_id_is_judged_as_the_decoder_does() {
        let id = SessionId::generate();
        for at in [0, 5, 41, 42] {
            for byte in 0..=255u8 {
                let mut value = id.expose().as_bytes().to_vec();
                value[at] = byte;
                let decodes = URL_SAFE_NO_PAD
                    .decode(&value)
                    .is_ok_and(|raw| raw.len() == 32);
                assert_eq!(
                    SessionId::from_bytes(&value).is_some(),
                    decodes,
                    "{byte} at {at}"
                );
            }
        }
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
    fn keys_read_back_from_hex_and_nothing_else_does() {
        let key = SessionId::generate().key();
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        let upper = key.to_hex().to_uppercase();
        for bad in ["", "00", upper.as_str(), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(SessionKey::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_id() {
        let id = SessionId::generate();
        assert!(!format!("{id:?}").contains(id.expose()));
    }
}
