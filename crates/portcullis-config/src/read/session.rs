//! Sessions: the store (memory or Redis), the cookie, lifetimes, earlier secrets.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::model::*;
use crate::reader::Reader;

pub(super) fn read_store(r: &Reader<'_>) -> SessionStoreKind {
    let redis_settings_given = r.is_set("session.redis.url")
        || r.is_set("session.redis.cluster_urls")
        || r.is_set("session.redis.sentinel.master_name");
    match r.string("session.store").as_deref() {
        None | Some("memory") => {
            for key in [
                "url",
                "cluster_urls",
                "ca_file",
                "key_prefix",
                "timeout",
                "sentinel.master_name",
                "sentinel.urls",
                "sentinel.password",
                "sentinel.db",
            ] {
                r.mark_known(&format!("session.redis.{key}"));
            }
            if redis_settings_given {
                r.error(
                    "session.store",
                    "is memory (the default) while session.redis is configured",
                    "set SESSION__STORE=redis to use Redis, or remove the Redis settings",
                );
            }
            SessionStoreKind::Memory
        }
        Some("redis") => {
            let single = r.string("session.redis.url");
            let cluster = r
                .list("session.redis.cluster_urls")
                .filter(|l| !l.is_empty());
            let sentinel = read_sentinel(r);
            if sentinel.is_some() && (single.is_some() || cluster.is_some()) {
                r.error(
                    "session.redis.sentinel.master_name",
                    "is set together with session.redis.url or cluster_urls",
                    "with Sentinel, list the sentinels in session.redis.sentinel.urls (and the data nodes' password in session.redis.sentinel.password) instead of url",
                );
            }
            let (single, cluster) = if sentinel.is_some() {
                (None, None)
            } else {
                (single, cluster)
            };
            let (urls, is_cluster, key) = match (&sentinel, single, cluster) {
                (Some((_, urls)), _, _) => (urls.clone(), false, "session.redis.sentinel.urls"),
                (None, single, cluster) => match (single, cluster) {
                    (Some(url), None) => (vec![url], false, "session.redis.url"),
                    (None, Some(urls)) => (urls, true, "session.redis.cluster_urls"),
                    (Some(_), Some(_)) => {
                        r.error(
                        "session.redis.cluster_urls",
                        "is set together with session.redis.url",
                        "set session.redis.url for one Redis server, or session.redis.cluster_urls for the seed nodes of a Redis Cluster, not both",
                    );
                        (Vec::new(), false, "session.redis.url")
                    }
                    (None, None) => {
                        r.error(
                        "session.redis.url",
                        "is missing, and session.store is redis",
                        "set SESSION__REDIS__URL to redis://[user:password@]host:6379[/db] (rediss:// for TLS), or SESSION__REDIS__CLUSTER_URLS to the cluster's seed nodes, or SESSION__REDIS__SENTINEL__MASTER_NAME and SESSION__REDIS__SENTINEL__URLS",
                    );
                        (Vec::new(), false, "session.redis.url")
                    }
                },
            };
            for url in &urls {
                // Never echo the URL: it may carry a password.
                let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
                if !scheme_ok
                    || crate::Url::parse(url)
                        .map(|u| u.host().is_none())
                        .unwrap_or(true)
                {
                    r.error(
                        key,
                        "holds a value that is not a redis:// or rediss:// URL with a host",
                        "write redis://[user:password@]host:port[/db], or rediss:// for TLS",
                    );
                }
            }
            SessionStoreKind::Redis(RedisConfig {
                urls,
                cluster: is_cluster,
                ca_file: r.string("session.redis.ca_file").map(PathBuf::from),
                key_prefix: r
                    .string("session.redis.key_prefix")
                    .unwrap_or_else(|| "portcullis".into()),
                timeout: r.duration("session.redis.timeout", Duration::from_secs(2)),
                sentinel: sentinel.map(|(config, _)| config),
            })
        }
        Some(other) => {
            r.error(
                "session.store",
                format!("`{other}` is not a session store"),
                "write memory (one replica) or redis (several replicas)",
            );
            SessionStoreKind::Memory
        }
    }
}

/// Redis Sentinel, when its master's name is set: the settings and the sentinels' URLs.
fn read_sentinel(r: &Reader<'_>) -> Option<(SentinelConfig, Vec<String>)> {
    let password = r.secret("session.redis.sentinel.password");
    let db = r.number("session.redis.sentinel.db", 0);
    let urls = r.list("session.redis.sentinel.urls").unwrap_or_default();
    let Some(master_name) = r.string("session.redis.sentinel.master_name") else {
        if !urls.is_empty() || password.is_some() {
            r.error(
                "session.redis.sentinel.master_name",
                "is missing while other session.redis.sentinel settings are set",
                "set the name the sentinels know the master by (the Bitnami chart's default is mymaster)",
            );
        }
        return None;
    };
    if urls.is_empty() {
        r.error(
            "session.redis.sentinel.urls",
            "is missing, and session.redis.sentinel.master_name is set",
            "list the sentinels, such as redis://redis-sentinel-0.redis-headless:26379,redis://redis-sentinel-1.redis-headless:26379",
        );
    }
    Some((
        SentinelConfig {
            master_name,
            password,
            db: i64::try_from(db).unwrap_or(0),
        },
        urls,
    ))
}

pub(super) fn read_previous_secrets(r: &Reader<'_>) -> Vec<SecretString> {
    let secrets = r.list("session.previous_secrets").unwrap_or_default();
    if secrets.iter().any(|s| s.len() < MIN_SECRET_BYTES) {
        r.error(
            "session.previous_secrets",
            format!("holds a secret shorter than {MIN_SECRET_BYTES} bytes"),
            "list the earlier cookie secrets exactly as they were (each at least 32 bytes)",
        );
    }
    secrets.into_iter().map(SecretString::from).collect()
}

pub(super) fn read_cookie_name(r: &Reader<'_>) -> String {
    let name = r
        .string("session.cookie_name")
        .unwrap_or_else(|| "session_token".into());
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        r.error(
            "session.cookie_name",
            format!("`{name}` is not a valid cookie name"),
            "use letters, digits, `-`, `_` and `.` only",
        );
        return "session_token".into();
    }
    name
}

/// `session.cookie_domain`: a parent domain of the public host (a browser ignores a
/// cookie whose domain does not cover the host that set it).
pub(super) fn read_cookie_domain(
    r: &Reader<'_>,
    auth: &AuthConfig,
    public_url: Option<&Url>,
) -> Option<String> {
    let raw = r.string("session.cookie_domain")?;
    let domain = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    let well_formed = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !well_formed {
        r.error(
            "session.cookie_domain",
            format!("`{raw}` is not a domain name"),
            "write the parent domain of your apps, such as example.com",
        );
        return None;
    }
    let public_host = public_url
        .or(auth.redirect_url.as_ref())
        .and_then(|u| u.host_str())
        .map(str::to_ascii_lowercase);
    if let Some(host) = public_host
        && host != domain
        && !host.ends_with(&format!(".{domain}"))
    {
        r.error(
            "session.cookie_domain",
            format!("`{domain}` does not contain the public host {host}, so browsers would drop the cookie"),
            format!("use {host} or one of its parent domains"),
        );
        return None;
    }
    Some(domain)
}
