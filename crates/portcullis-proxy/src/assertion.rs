//! The identity assertion: a short-lived ES256 JWT that says who the user is, signed with
//! a key the app can check against `/.well-known/portcullis/jwks.json`, so the app need
//! not take plaintext headers on trust.
//!
//! Claims: `iss` (Portcullis's public origin), `aud` (the route's audience, by default the
//! upstream's origin), `sub`, `email`, `preferred_username`, `name`, `groups`, `provider`,
//! `iat`, `exp`; header `alg: ES256`, `kid` (the key's RFC 7638 thumbprint). Signing costs
//! real CPU, so an assertion is cached per session and audience and reused until shortly
//! before it expires; a change to the identity (new groups) makes a new one. Several
//! replicas share the key from its file; earlier keys are still published for rotation.
//!
//! Never logs the key or an assertion.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Mutex;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use foldhash::fast::RandomState;
use http::HeaderValue;
use portcullis_config::IdentityJwtConfig;
use portcullis_core::Identity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::json;

/// Cached assertions per worker, at most; beyond it the expired ones go, then all.
const CACHE_LIMIT: usize = 10_000;

/// A public key as published: its thumbprint and its JWK.
struct PublicJwk {
    kid: String,
    jwk: serde_json::Value,
}

struct Cached {
    token: HeaderValue,
    fingerprint: u64,
    /// Unix seconds after which a new assertion is signed.
    renew_at: u64,
}

/// A worker's assertions, by session word and audience hash.
type Cache = HashMap<(u64, u64), Cached, RandomState>;

pub(crate) struct Assertions {
    issuer: String,
    signer: EcdsaKeyPair,
    rng: SystemRandom,
    /// The protected header, base64url, with the current `kid`.
    header: String,
    lifetime: u64,
    jwks: Bytes,
    /// One cache per server worker: never contended.
    cache: Vec<Mutex<Cache>>,
    /// Seeded at random per process: a session's word, the audience's hash and the
    /// fingerprint cannot be predicted from outside.
    hasher: RandomState,
}

fn jwk_of(point: &[u8]) -> Result<PublicJwk, String> {
    // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
    if point.len() != 65 || point[0] != 4 {
        return Err("not an uncompressed P-256 public key".into());
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..]);
    // RFC 7638: the required members, in lexical order, without spaces.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
    Ok(PublicJwk {
        jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}),
        kid,
    })
}

/// The signing key in a PEM file (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
pub(crate) fn load_signing_key(path: &Path) -> Result<EcdsaKeyPair, String> {
    let der = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))?;
    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_der())
        .map_err(|e| format!("{} is not an EC P-256 private key: {e}", path.display()))
}

/// Checks an assertion key file as start-up would load it; the key's `kid` if it is a
/// usable EC P-256 private key (for `portcullis check`).
pub fn check_key_file(path: &Path) -> Result<String, String> {
    let pair = load_signing_key(path)?;
    Ok(jwk_of(pair.public_key().as_ref())?.kid)
}

/// A published earlier key: a private key file (its public half is published) or a
/// `PUBLIC KEY` file.
fn load_previous(path: &Path) -> Result<PublicJwk, String> {
    if let Ok(pair) = load_signing_key(path) {
        return jwk_of(pair.public_key().as_ref());
    }
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a key from {}: {e}", path.display()))?;
    // The subjectPublicKey of a P-256 SPKI is the last 65 bytes.
    let bytes = spki.as_ref();
    let point = bytes
        .get(bytes.len().saturating_sub(65)..)
        .ok_or_else(|| format!("{} holds no P-256 public key", path.display()))?;
    jwk_of(point).map_err(|e| format!("{}: {e}", path.display()))
}

impl Assertions {
    /// Loads the keys; `issuer` is Portcullis's public origin. An unreadable or wrong key
    /// file is an error naming the file: the assertion is never silently left out.
    pub(crate) fn load(
        config: &IdentityJwtConfig,
        issuer: String,
        workers: usize,
    ) -> Result<Self, String> {
        let signer = load_signing_key(&config.signing_key_file)
            .map_err(|e| format!("identity_jwt.signing_key_file: {e}"))?;
        let current = jwk_of(signer.public_key().as_ref())?;
        let mut keys = vec![current.jwk.clone()];
        for path in &config.previous_key_files {
            let previous =
                load_previous(path).map_err(|e| format!("identity_jwt.previous_key_files: {e}"))?;
            if previous.kid != current.kid {
                keys.push(previous.jwk);
            }
        }
        let header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "ES256", "kid": current.kid, "typ": "JWT"})
                .to_string()
                .as_bytes(),
        );
        Ok(Assertions {
            issuer,
            signer,
            rng: SystemRandom::new(),
            header,
            lifetime: config.lifetime.as_secs(),
            jwks: Bytes::from(json!({"keys": keys}).to_string()),
            cache: (0..workers.max(1))
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: RandomState::default(),
        })
    }

    /// The JWKS document.
    pub(crate) fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// What the cache files a session's assertions under: a keyed hash of its cookie
    /// value (the session id), cheaper than the id's SHA-256 the stores use. Two sessions
    /// that shared a word would still not share an assertion unless their identities
    /// also shared a fingerprint.
    pub(crate) fn session_word(&self, session_id: &str) -> u64 {
        self.hasher.hash_one(session_id)
    }

    /// The assertion for `who` (with `groups`, the provider's and the directory's) and
    /// `audience`, from the cache when `session` (its [`Assertions::session_word`]) has
    /// one that is still fresh.
    pub(crate) fn assertion<'g>(
        &self,
        worker: usize,
        session: Option<u64>,
        who: &Identity,
        groups: impl Iterator<Item = &'g str> + Clone,
        audience: &str,
    ) -> Option<HeaderValue> {
        let now = portcullis_core::time::unix_now();
        let Some(session) = session else {
            return self.sign(who, groups, audience, now);
        };
        let key = (session, self.hasher.hash_one(audience));
        let fingerprint = self.fingerprint(who, groups.clone());
        let cache = &self.cache[worker % self.cache.len()];
        if let Ok(cache) = cache.lock()
            && let Some(hit) = cache.get(&key)
            && hit.fingerprint == fingerprint
            && now < hit.renew_at
        {
            return Some(hit.token.clone());
        }
        let token = self.sign(who, groups, audience, now)?;
        if let Ok(mut cache) = cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, c| now < c.renew_at);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    token: token.clone(),
                    fingerprint,
                    // Renewed with a quarter of its life left, so the app never gets
                    // one about to expire.
                    renew_at: now + self.lifetime - self.lifetime / 4,
                },
            );
        }
        Some(token)
    }

    /// What the assertion says about the user, condensed: a change makes a new one.
    fn fingerprint<'g>(&self, who: &Identity, groups: impl Iterator<Item = &'g str>) -> u64 {
        let mut h = self.hasher.build_hasher();
        (
            who.id(),
            who.email(),
            who.username(),
            who.name(),
            &who.provider,
        )
            .hash(&mut h);
        for g in groups {
            g.hash(&mut h);
        }
        h.finish()
    }

    fn sign<'g>(
        &self,
        who: &Identity,
        groups: impl Iterator<Item = &'g str>,
        audience: &str,
        now: u64,
    ) -> Option<HeaderValue> {
        let claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": who.id(),
            "email": who.email(),
            "preferred_username": who.username(),
            "name": who.name(),
            "groups": groups.collect::<Vec<_>>(),
            "provider": who.provider,
            "iat": now,
            "exp": now + self.lifetime,
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        let input = format!("{}.{payload}", self.header);
        let signature = self.signer.sign(&self.rng, input.as_bytes()).ok()?;
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        HeaderValue::from_str(&token).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A P-256 key in PKCS#8 PEM, written to a temporary file.
    fn key_file(label: &str) -> std::path::PathBuf {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(doc.as_ref())
        );
        let path = std::env::temp_dir().join(format!(
            "portcullis-assertion-{label}-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn config(key: std::path::PathBuf, previous: Vec<std::path::PathBuf>) -> IdentityJwtConfig {
        IdentityJwtConfig {
            signing_key_file: key,
            previous_key_files: previous,
            lifetime: Duration::from_secs(120),
        }
    }

    fn who() -> Identity {
        Identity::from(portcullis_core::IdentityFields {
            id: "sub-1".into(),
            email: Some("a@example.com".into()),
            provider: "oidc".into(),
            ..portcullis_core::IdentityFields::default()
        })
    }

    #[test]
    fn an_assertion_verifies_with_the_published_key() {
        let a = Assertions::load(
            &config(key_file("verify"), vec![]),
            "https://app.example.com".into(),
            1,
        )
        .unwrap();
        let token = a
            .assertion(
                0,
                None,
                &who(),
                ["g1", "g2"].into_iter(),
                "https://api.example.com",
            )
            .unwrap();
        let token = token.to_str().unwrap();
        let jwks: serde_json::Value = serde_json::from_slice(&a.jwks()).unwrap();
        let key = &jwks["keys"][0];
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            key["x"].as_str().unwrap(),
            key["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["https://api.example.com"]);
        validation.set_issuer(&["https://app.example.com"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "sub-1");
        assert_eq!(data.claims["groups"], json!(["g1", "g2"]));
        assert_eq!(data.header.kid.as_deref(), key["kid"].as_str());
    }

    #[test]
    fn assertions_are_cached_per_session_and_audience_until_the_identity_changes() {
        let a =
            Assertions::load(&config(key_file("cache"), vec![]), "https://app".into(), 1).unwrap();
        let s = a.session_word("first-session-id");
        let one = a
            .assertion(0, Some(s), &who(), ["g"].into_iter(), "aud-1")
            .unwrap();
        let again = a
            .assertion(0, Some(s), &who(), ["g"].into_iter(), "aud-1")
            .unwrap();
        assert_eq!(one, again, "signed once, then reused");
        let other_aud = a
            .assertion(0, Some(s), &who(), ["g"].into_iter(), "aud-2")
            .unwrap();
        assert_ne!(one, other_aud);
        let regrouped = a
            .assertion(0, Some(s), &who(), ["g", "h"].into_iter(), "aud-1")
            .unwrap();
        assert_ne!(one, regrouped, "new groups make a new assertion");
        let other_session = a.session_word("second-session-id");
        assert_ne!(s, other_session);
        let theirs = a
            .assertion(0, Some(other_session), &who(), ["g"].into_iter(), "aud-1")
            .unwrap();
        assert_ne!(one, theirs, "each session has its own");
        let mut someone_else = who();
        someone_else.set_email(Some("other@example.com"));
        let renamed = a
            .assertion(0, Some(s), &someone_else, ["g"].into_iter(), "aud-1")
            .unwrap();
        assert_ne!(
            one, renamed,
            "another identity under the same session word is signed anew"
        );
    }

    #[test]
    fn previous_keys_are_published_and_bad_key_files_are_named() {
        let old = key_file("old");
        let a =
            Assertions::load(&config(key_file("new"), vec![old]), "https://app".into(), 1).unwrap();
        let jwks: serde_json::Value = serde_json::from_slice(&a.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let missing = Assertions::load(
            &config("/nonexistent/key.pem".into(), vec![]),
            "https://app".into(),
            1,
        )
        .err()
        .unwrap();
        assert!(missing.contains("/nonexistent/key.pem"), "{missing}");
        let junk = std::env::temp_dir().join(format!("portcullis-junk-{}.pem", std::process::id()));
        std::fs::write(&junk, "not a key").unwrap();
        assert!(Assertions::load(&config(junk, vec![]), "https://app".into(), 1).is_err());
    }
}
