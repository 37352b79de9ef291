//! One configured identity provider, whatever protocol it speaks: the proxy starts a
//! login, finishes it with the code, and gets an [`Identity`] back.

use std::sync::Arc;

use portcullis_config::ProviderConfig;
use portcullis_core::Identity;

use crate::IdentityError;
use crate::github::GitHubProvider;
use crate::oidc::{AuthorizationRequest, OidcProvider, TokenResponse};

/// A fresh authentication a route asks for (OpenID Connect Core §3.1.2.1): `max_age`
/// (with `prompt=login`, so the provider does not answer from its own session) and/or
/// `acr_values`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    pub max_age: Option<u64>,
    pub acr_values: Vec<String>,
}

/// Which step of finishing a login failed: the token exchange and the user info are
/// logged under different messages ("OAuth token exchange failed", "Failed to get user
/// info"), because they point at different fixes (client credentials, scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// Exchanging the authorization code at the token endpoint.
    TokenExchange,
    /// Learning who the user is: ID token, userinfo, GitHub's API, Microsoft Graph.
    Identity,
}

pub enum Provider {
    Oidc(Arc<OidcProvider>),
    GitHub(Box<GitHubProvider>),
}

impl Provider {
    pub fn new(config: ProviderConfig, http: reqwest::Client) -> Provider {
        match GitHubProvider::new(config.clone(), http.clone()) {
            Some(github) => Provider::GitHub(Box::new(github)),
            None => Provider::Oidc(Arc::new(
                OidcProvider::new(config, http).expect("every other kind is OpenID Connect"),
            )),
        }
    }

    pub fn config(&self) -> &ProviderConfig {
        match self {
            Provider::Oidc(p) => p.config(),
            Provider::GitHub(p) => p.config(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config().name
    }

    pub fn display_name(&self) -> &str {
        &self.config().display_name
    }

    /// Whether the provider's metadata and keys are loaded (GitHub has none to load).
    pub fn is_ready(&self) -> bool {
        match self {
            Provider::Oidc(p) => p.is_ready(),
            Provider::GitHub(_) => true,
        }
    }

    /// Background discovery and key refresh, for the providers that have them.
    pub fn spawn_maintenance(&self) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Provider::Oidc(p) => Some(p.spawn_maintenance()),
            Provider::GitHub(_) => None,
        }
    }

    pub fn as_oidc(&self) -> Option<&Arc<OidcProvider>> {
        match self {
            Provider::Oidc(p) => Some(p),
            Provider::GitHub(_) => None,
        }
    }

    /// The authorization request a login starts with; `step_up` asks an OpenID Connect
    /// provider to authenticate the user again (GitHub has no such parameters).
    pub async fn authorization_request(
        &self,
        redirect_uri: &str,
        step_up: Option<&StepUp>,
    ) -> Result<AuthorizationRequest, IdentityError> {
        match self {
            Provider::Oidc(p) => p.authorization_request(redirect_uri, step_up).await,
            Provider::GitHub(p) => Ok(p.authorization_request(redirect_uri)),
        }
    }

    /// Exchanges the code and returns who the provider vouched for, with the tokens.
    pub async fn finish_login(
        &self,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<(Identity, TokenResponse), (LoginStep, IdentityError)> {
        let exchange = |e| (LoginStep::TokenExchange, e);
        let identify = |e| (LoginStep::Identity, e);
        match self {
            Provider::Oidc(p) => {
                let tokens = p
                    .exchange_code(code, pkce_verifier, redirect_uri)
                    .await
                    .map_err(exchange)?;
                let identity = p.identity(&tokens, nonce).await.map_err(identify)?;
                Ok((identity, tokens))
            }
            Provider::GitHub(p) => {
                let mut tokens = p
                    .exchange_code(code, pkce_verifier, redirect_uri)
                    .await
                    .map_err(exchange)?;
                // GitHub App user tokens expire and come with a refresh token, but the
                // session does not depend on them: Portcullis does not refresh them.
                tokens.refresh_token = None;
                let identity = p.identity(&tokens).await.map_err(identify)?;
                Ok((identity, tokens))
            }
        }
    }

    /// Finishes an implicit-flow login from the ID token the browser brought.
    pub async fn finish_implicit(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<Identity, IdentityError> {
        match self {
            Provider::Oidc(p) => p.implicit_identity(id_token, nonce).await,
            Provider::GitHub(_) => Err(IdentityError::invalid("GitHub has no implicit flow")),
        }
    }

    /// Refreshes the tokens (OpenID Connect providers; GitHub's OAuth app tokens do not
    /// expire).
    pub async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Option<Result<TokenResponse, IdentityError>> {
        match self {
            Provider::Oidc(p) => Some(p.refresh(refresh_token).await),
            Provider::GitHub(_) => None,
        }
    }

    /// Where the browser ends its session at the provider (RP-initiated logout), if the
    /// provider publishes it.
    pub async fn end_session_endpoint(&self) -> Option<String> {
        match self {
            Provider::Oidc(p) => p.metadata().await.ok()?.end_session_endpoint,
            Provider::GitHub(_) => None,
        }
    }
}

/// The `iss` a JWT claims, read without verifying anything: only to pick the provider
/// whose keys then verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}
