//! Every failure that ends a request, and the one place each becomes a response.
//!
//! The variant says where the fault lies, which decides the status: the client (4xx),
//! the upstream app (502/504), the identity provider (502) or the session store (503,
//! failing closed). Browsers get a page that says what happened and what to do; API
//! clients get JSON with the same message.

use http::{Response, StatusCode};
use portcullis_identity::IdentityError;
use portcullis_session::StoreError;

use crate::body::ProxyBody;
use crate::pages::{self, Action};
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A login that cannot continue because of what the browser sent.
    #[error("{0}")]
    BadLogin(String),
    #[error("login refused by the identity provider: {0}")]
    ProviderRefused(String),
    /// The provider vouched for `who`, but the policy does not admit them.
    #[error("{who} is not allowed: {reason}")]
    Denied { who: String, reason: String },
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the provisioning directory is unavailable")]
    DirectoryUnavailable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    /// A state-changing request a browser sent from another site.
    #[error("cross-site request refused")]
    CrossSite,
    /// An `Authorization: Bearer` token that did not verify.
    #[error("bearer token refused: {0}")]
    BadBearer(String),
}

impl ProxyError {
    /// The response for this error; `html` picks a page over JSON. `login` is where a
    /// "sign in again" button points.
    pub(crate) fn into_response(self, html: bool, login: &str) -> Response<ProxyBody> {
        let (status, code, title, message, retry) = match &self {
            ProxyError::Upstream(UpstreamError::Unreachable(_)) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "The application is not responding",
                "Portcullis could not reach the application behind it. It may be starting or down; try again in a moment.".to_string(),
                false,
            ),
            ProxyError::Upstream(UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "The application is taking too long",
                "The application behind Portcullis did not answer in time. Try again in a moment.".to_string(),
                false,
            ),
            ProxyError::BadLogin(why) => (
                StatusCode::BAD_REQUEST,
                "login_failed",
                "Sign-in could not be completed",
                format!("{why} Start the sign-in again."),
                true,
            ),
            ProxyError::ProviderRefused(why) => (
                StatusCode::FORBIDDEN,
                "login_refused",
                "Sign-in was refused",
                format!("The identity provider did not sign you in: {why}."),
                true,
            ),
            ProxyError::Denied { who, reason }
            | ProxyError::Identity(IdentityError::NotAllowed { who, reason }) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Access denied",
                format!("The identity provider signed you in as {who}, but {reason}. Ask an administrator to add you, or sign in with another account."),
                true,
            ),
            ProxyError::Identity(IdentityError::TokenExchange { client_fault: true, .. }) => (
                StatusCode::BAD_REQUEST,
                "login_failed",
                "Sign-in could not be completed",
                "This sign-in response was already used or has expired. Start the sign-in again.".to_string(),
                true,
            ),
            ProxyError::Identity(IdentityError::TokenExchange { .. }) => (
                StatusCode::BAD_GATEWAY,
                "provider_error",
                "The identity provider refused the sign-in",
                "The identity provider would not complete the sign-in for this application. An administrator should check the client id and secret.".to_string(),
                false,
            ),
            ProxyError::Identity(IdentityError::InvalidToken(_)) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "Sign-in could not be verified",
                "The identity provider's answer did not pass verification. Start the sign-in again; if this keeps happening, an administrator should check the provider configuration and server clocks.".to_string(),
                true,
            ),
            ProxyError::Identity(IdentityError::ProviderUnavailable { .. }) => (
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "The identity provider cannot be reached",
                "Portcullis cannot reach the identity provider to sign you in. Try again in a moment.".to_string(),
                true,
            ),
            ProxyError::Identity(IdentityError::UserInfo(_)) => (
                StatusCode::BAD_GATEWAY,
                "provider_error",
                "Your profile could not be read",
                "The identity provider did not return your profile. Try again in a moment.".to_string(),
                true,
            ),
            ProxyError::DirectoryUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "directory_unavailable",
                "Sign-in is temporarily unavailable",
                "Portcullis cannot reach its user directory to check your account. Try again in a moment.".to_string(),
                true,
            ),
            ProxyError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions_unavailable",
                "Sign-in is temporarily unavailable",
                "Portcullis cannot reach its session store, so it cannot check who you are. Nobody is let in until it is back; try again in a moment.".to_string(),
                false,
            ),
            ProxyError::NotFound | ProxyError::Upstream(UpstreamError::Target) => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "There is nothing here.".to_string(),
                false,
            ),
            ProxyError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This endpoint does not accept that method.".to_string(),
                false,
            ),
            ProxyError::BadBearer(reason) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "Access token refused",
                format!("The bearer token was refused: {reason}."),
                false,
            ),
            ProxyError::CrossSite => (
                StatusCode::FORBIDDEN,
                "cross_site",
                "Request refused",
                "This request came from another site. Sign out from this application's own page.".to_string(),
                false,
            ),
            ProxyError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request too large",
                "The request body is larger than Portcullis accepts here.".to_string(),
                false,
            ),
        };
        let mut resp = if html {
            let action = retry.then_some(Action {
                label: "Sign in again",
                href: login,
            });
            pages::page(status, title, &message, action)
        } else {
            pages::json_error(status, code, &message)
        };
        if let ProxyError::BadBearer(reason) = &self {
            // RFC 6750 §3: the error, and a description without quotes or backslashes.
            let description: String = reason
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            if let Ok(v) = http::HeaderValue::from_str(&format!(
                "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{description}\""
            )) {
                resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
        }
        if let ProxyError::MethodNotAllowed(allow) = self
            && let Ok(v) = http::HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(http::header::ALLOW, v);
        }
        resp
    }
}
