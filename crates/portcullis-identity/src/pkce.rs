//! Proof Key for Code Exchange (RFC 7636) and the other per-login secrets.
//!
//! RFC 7636 §4.1: `code_verifier = high-entropy cryptographic random STRING using the
//! unreserved characters [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~", with a minimum
//! length of 43 characters`. §4.2: `S256: code_challenge =
//! BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A fresh verifier: 256 random bits as 43 base64url characters.
pub fn verifier() -> String {
    portcullis_core::random::token()
}

/// The S256 challenge for `verifier`.
pub fn challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_matches_the_rfc_7636_appendix_b_example() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_meet_the_minimum_length() {
        assert_eq!(verifier().len(), 43);
    }
}
