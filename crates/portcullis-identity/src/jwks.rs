//! A provider's signing keys (RFC 7517 JSON Web Key Set), kept current.
//!
//! Keys live behind an `ArcSwap`, so verification never waits on a lock. A token signed
//! by a key we do not hold triggers one refetch (providers publish a new key before
//! signing with it), at most once per `min_refetch_interval`, so a flood of tokens with
//! made-up `kid`s cannot turn Portcullis into a load generator against the provider.
//! Keys a token carries itself (`jwk`, `jku`, `x5u` headers) are never used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::IdentityError;
use crate::discovery::error_chain;

struct Key {
    kid: Option<String>,
    /// The `alg` the key is restricted to, if the set says.
    alg: Option<String>,
    decoding: Arc<DecodingKey>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let alg_name = format!("{alg:?}");
        let mut fitting = self.keys.iter().filter(|k| {
            k.decoding.family() == alg.family() && k.alg.as_deref().is_none_or(|a| a == alg_name)
        });
        match kid {
            Some(kid) => fitting
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| k.decoding.clone()),
            // Without a `kid`, only an unambiguous key is acceptable.
            None => {
                let first = fitting.next()?;
                fitting.next().is_none().then(|| first.decoding.clone())
            }
        }
    }
}

pub struct JwksCache {
    provider: String,
    uri: String,
    http: reqwest::Client,
    keys: ArcSwap<KeySet>,
    last_fetch: tokio::sync::Mutex<Instant>,
    min_refetch_interval: Duration,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl JwksCache {
    /// Fetches the key set once; fails if it cannot be fetched or holds no usable key.
    pub async fn load(
        http: reqwest::Client,
        provider: &str,
        uri: &str,
        min_refetch_interval: Duration,
    ) -> Result<Self, IdentityError> {
        let cache = JwksCache {
            provider: provider.to_string(),
            uri: uri.to_string(),
            http,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            min_refetch_interval,
        };
        cache.fetch().await?;
        Ok(cache)
    }

    async fn fetch(&self) -> Result<(), IdentityError> {
        let unavailable = |reason: String| IdentityError::ProviderUnavailable {
            provider: self.provider.clone(),
            reason,
        };
        let response = crate::http::send(
            "idp.jwks",
            self.http
                .get(&self.uri)
                .header("accept", "application/json"),
        )
        .await
        .map_err(|e| {
            unavailable(format!(
                "cannot fetch keys from {}: {}",
                self.uri,
                error_chain(&e)
            ))
        })?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "the key set {} answered {}",
                self.uri,
                response.status()
            )));
        }
        let raw: RawSet = response
            .json()
            .await
            .map_err(|e| unavailable(format!("{} is not a JSON Web Key Set: {e}", self.uri)))?;
        let mut keys = Vec::new();
        for value in raw.keys {
            // One key of a type we do not support must not spoil the others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                continue;
            }
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg: jwk.common.key_algorithm.map(|a| a.to_string()),
                decoding: Arc::new(decoding),
            });
        }
        if keys.is_empty() {
            return Err(unavailable(format!(
                "the key set {} holds no usable signing key",
                self.uri
            )));
        }
        tracing::debug!(provider = %self.provider, keys = keys.len(), "loaded signing keys");
        self.keys.store(Arc::new(KeySet { keys }));
        Ok(())
    }

    /// Refetches the key set now (for the periodic refresh that drops retired keys).
    pub async fn refresh(&self) -> Result<(), IdentityError> {
        let mut last = self.last_fetch.lock().await;
        *last = Instant::now();
        self.fetch().await
    }

    /// The key that verifies a token with header `kid` and `alg`, refetching the set
    /// once if the key is unknown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, IdentityError> {
        if let Some(key) = self.keys.load().find(kid, alg) {
            return Ok(key);
        }
        let unknown = || {
            IdentityError::invalid(format!(
                "signed by a key the provider does not publish (kid {:?}, alg {alg:?})",
                kid.unwrap_or("none")
            ))
        };
        let mut last = self.last_fetch.lock().await;
        // Another request may have refetched while this one waited.
        if let Some(key) = self.keys.load().find(kid, alg) {
            return Ok(key);
        }
        if last.elapsed() < self.min_refetch_interval {
            return Err(unknown());
        }
        *last = Instant::now();
        tracing::info!(provider = %self.provider, kid = kid.unwrap_or("none"), "unknown signing key: refetching the key set");
        if let Err(e) = self.fetch().await {
            tracing::warn!(provider = %self.provider, error = %e, "key set refetch failed");
            return Err(unknown());
        }
        self.keys.load().find(kid, alg).ok_or_else(unknown)
    }
}
