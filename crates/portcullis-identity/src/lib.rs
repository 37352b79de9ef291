//! Identity providers: everything Portcullis asks of an OpenID Connect provider (with the
//! Entra and Google rules), of GitHub's OAuth endpoints and REST API, and of Microsoft
//! Graph, and the outbound HTTP client those questions travel over. [`Provider`] is the
//! one face the proxy sees.
//!
//! Input: a provider's configuration. Output: an [`Identity`] the provider vouched for,
//! or an [`IdentityError`] that says which step failed. This crate never logs token or
//! secret values; its errors carry the provider's error code and description only.
#![forbid(unsafe_code)]

mod claims;
mod discovery;
mod error;
mod github;
mod graph;
pub mod http;
mod jwks;
mod oidc;
pub mod pkce;
mod provider;
pub mod ssf;

pub use claims::{IdTokenClaims, identity_from_claims};
pub use discovery::{ProviderMetadata, discovery_document_url, expected_issuer};
pub use error::IdentityError;
pub use github::GitHubProvider;
pub use jwks::JwksCache;
pub use oidc::{
    AuthorizationRequest, Introspected, LOGOUT_EVENT, LogoutToken, OidcProvider, TokenResponse,
    VerifiedBearer, read_unsigned_logout_token,
};
pub use portcullis_core::Identity;
pub use provider::{LoginStep, Provider, StepUp, unverified_issuer};
