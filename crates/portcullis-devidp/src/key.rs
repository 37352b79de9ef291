//! The provider's signing key: RSA-2048, RS256 (RFC 7518 §3.3), published as a JWK.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An RSA key that signs JWTs.
pub struct SigningKey {
    pair: KeyPair,
    kid: String,
}

impl SigningKey {
    /// A fresh RSA-2048 key with a random key id.
    ///
    /// # Panics
    /// If the cryptographic library cannot generate a key, which leaves nothing to sign
    /// with.
    pub fn generate() -> Self {
        let pair =
            KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation failed");
        let kid = portcullis_core::random::token()[..12].to_string();
        SigningKey { pair, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7517 §4, RFC 7518 §6.3.1).
    pub fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// Signs `claims` as a compact JWS with `{"alg":"RS256","typ":"JWT","kid":...}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// Signs with an arbitrary header: tests use it to forge tokens (a wrong `kid`, an
    /// `alg` that does not match the signature).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("RSA signing with a valid key and buffer cannot fail");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

    #[test]
    fn signatures_verify_against_the_published_jwk() {
        let key = SigningKey::generate();
        let token = key.sign(&json!({"sub": "x"}));
        let (input, sig) = token.rsplit_once('.').unwrap();
        let jwk = key.jwk();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let public = RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .expect("signature verifies");
        assert_eq!(jwk["kid"], key.kid());
    }
}
