//! The cache of token introspection answers (RFC 7662), so an API client's opaque token
//! is not sent to the provider on every request.
//!
//! An entry is keyed by the SHA-256 of the provider's name, its introspection URL and
//! the token together: one provider's answer about a token string is never taken for
//! another's (Ory Oathkeeper CVE-2026-33496 was a cache key without the issuer). An
//! active answer is kept for the configured time but never past the token's `exp`; a
//! refusal for a few seconds, so a client retrying a dead token does not reach the
//! provider each time. The cache is bounded: when full, expired entries are swept and,
//! if it is still full, nothing more is cached until they expire.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use portcullis_identity::VerifiedBearer;

/// How long a refusal is remembered.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// At most this many answers are held.
const CAPACITY: usize = 50_000;

#[derive(Clone)]
pub(crate) enum Answer {
    Active(Box<VerifiedBearer>),
    Refused(String),
}

pub(crate) struct IntrospectionCache {
    entries: DashMap<[u8; 32], (Instant, Answer)>,
    ttl: Duration,
}

impl IntrospectionCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        IntrospectionCache {
            entries: DashMap::new(),
            ttl,
        }
    }

    /// The cache key of `token` at the provider `provider` with introspection `url`.
    pub(crate) fn key(provider: &str, url: &str, token: &str) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [provider, url, token] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Answer> {
        let now = Instant::now();
        let entry = self.entries.get(key)?;
        if entry.0 > now {
            return Some(entry.1.clone());
        }
        drop(entry);
        self.entries.remove_if(key, |_, (until, _)| *until <= now);
        None
    }

    pub(crate) fn put(&self, key: [u8; 32], answer: Answer) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let keep = match &answer {
            Answer::Active(token) => {
                // Never past the token's own expiry.
                let left = token.expires_at.map(|exp| {
                    Duration::from_secs(exp.saturating_sub(portcullis_core::time::unix_now()))
                });
                left.map_or(self.ttl, |left| left.min(self.ttl))
            }
            Answer::Refused(_) => NEGATIVE_TTL.min(self.ttl),
        };
        if keep.is_zero() {
            return;
        }
        if self.entries.len() >= CAPACITY {
            self.entries.retain(|_, (until, _)| *until > now);
            if self.entries.len() >= CAPACITY {
                return;
            }
        }
        self.entries.insert(key, (now + keep, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Identity;

    fn active(exp: Option<u64>) -> Answer {
        Answer::Active(Box::new(VerifiedBearer {
            identity: Identity::from(portcullis_core::IdentityFields {
                id: "u".into(),
                provider: "a".into(),
                ..portcullis_core::IdentityFields::default()
            }),
            issued_at: None,
            expires_at: exp,
        }))
    }

    #[test]
    fn the_key_binds_the_provider_the_url_and_the_token() {
        let k = IntrospectionCache::key("a", "https://a/introspect", "tok");
        assert_ne!(
            k,
            IntrospectionCache::key("b", "https://a/introspect", "tok")
        );
        assert_ne!(
            k,
            IntrospectionCache::key("a", "https://b/introspect", "tok")
        );
        assert_ne!(
            k,
            IntrospectionCache::key("a", "https://a/introspect", "tok2")
        );
        // No shifting of bytes between the parts gives the same key.
        assert_ne!(
            IntrospectionCache::key("ab", "c", "d"),
            IntrospectionCache::key("a", "bc", "d")
        );
    }

    #[test]
    fn answers_are_kept_for_the_ttl_but_never_past_the_token_expiry() {
        let cache = IntrospectionCache::new(Duration::from_secs(30));
        let a = IntrospectionCache::key("a", "u", "t1");
        cache.put(a, active(None));
        assert!(matches!(cache.get(&a), Some(Answer::Active(_))));
        let b = IntrospectionCache::key("a", "u", "t2");
        cache.put(b, active(Some(portcullis_core::time::unix_now())));
        assert!(cache.get(&b).is_none(), "an expired token was cached");
        let c = IntrospectionCache::key("a", "u", "t3");
        cache.put(c, Answer::Refused("no".into()));
        assert!(matches!(cache.get(&c), Some(Answer::Refused(_))));
        let off = IntrospectionCache::new(Duration::ZERO);
        off.put(a, active(None));
        assert!(off.get(&a).is_none());
    }
}
