//! The Portcullis HTTP server.
//!
//! `server` accepts connections; `app` routes each request along one path (own endpoint,
//! or authenticate -> authorize -> forward); the header rules live in `hop` (hop-by-hop),
//! `forwarding` (the `X-Forwarded-*` trust boundary) and `redact` (identity headers);
//! `upstream` streams to the app; `error` is the single place failures become responses.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

mod app;
mod assertion;
mod body;
mod error;
mod ext_authz;
mod forwarding;
mod hop;
mod inbound;
mod introspection;
mod login_state;
mod metrics;
mod normalize;
mod pages;
mod redact;
pub mod return_to;
mod scim;
mod server;
mod sessions;
mod shutdown;
mod throttle;
mod upstream;

/// Entry points for the fuzz targets (`fuzz/`) into parsers that are otherwise private.
/// Not an API: only built with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The request-path normalizer the routes and the upstream see: the normalized path,
    /// or why it was refused.
    pub fn normalize_path(raw: &str, allow_semicolon: bool) -> Result<String, &'static str> {
        crate::normalize::normalize_path(raw, crate::normalize::PathRules { allow_semicolon })
            .map(|p| p.into_owned())
            .map_err(|m| m.explain())
    }

    /// Forward-auth's reading of the original request a proxy in front names (an
    /// `X-Original-URL`, `X-Forwarded-Uri` or Envoy's path suffix), for a request that
    /// came for `host`: the host and the normalized path the decision takes, or why the
    /// path was refused; and the per-location settings of the verify URL's `query`.
    pub fn forward_auth_original(
        url: &str,
        host: &str,
        query: &str,
    ) -> (
        Option<String>,
        Result<String, &'static str>,
        Result<(), String>,
    ) {
        let (host, path) = crate::app::forward_auth::split_original(url, Some(host));
        let path = normalize_path(&path, false);
        let location = crate::app::forward_auth::parse_location(query).map(|_| ());
        (host, path, location)
    }
}

/// For the fuzz target `client_head`: `Err` if Portcullis's own HTTP/1.1 path serves a
/// request head that hyper's server refuses or reads differently.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_client_head(raw: &[u8]) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(server::differential_compare(raw))
}

/// For the fuzz target `upstream_response`: see [`upstream::read_response`].
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use upstream::read_response as fuzz_upstream_response;

pub use app::endpoints;
pub use app::{App, AppError, ConnInfo};
pub use assertion::check_key_file;
pub use ext_authz::serve_ext_authz;
pub use inbound::RequestBody;
pub use server::{
    Certificates, Live, ServerSettings, TlsError, default_max_connections, load_tls, serve,
    serve_admin,
};
