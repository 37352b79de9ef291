//! A development OpenID Connect provider: a real issuer with a discovery document, a key
//! set, an authorization endpoint with a small login form (any user name, email and
//! groups), a token endpoint that enforces PKCE and single-use codes, and userinfo. ID
//! tokens are RS256-signed with a key generated at start.
//!
//! [`WhoAmI`] is the small app `portcullis dev` puts behind the proxy when it is given
//! none: it shows what an app receives.
//!
//! It is for development and tests only: it authenticates whoever fills in the form. It
//! binds wherever it is told; `portcullis dev` keeps it on loopback. Relying parties talk
//! to it over HTTP exactly as they talk to any provider.
#![forbid(unsafe_code)]

mod key;
mod pages;
mod server;
mod whoami;

pub use key::SigningKey;
pub use server::{Client, DevIdp, subject_of};
pub use whoami::WhoAmI;
