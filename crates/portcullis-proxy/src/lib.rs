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

pub use app::endpoints;
pub use app::{App, AppError, ConnInfo};
pub use assertion::check_key_file;
pub use ext_authz::serve_ext_authz;
pub use inbound::RequestBody;
pub use server::{
    Certificates, Live, ServerSettings, TlsError, default_max_connections, load_tls, serve,
    serve_admin,
};
