//! The identity provider ends sessions: OpenID Connect Back-Channel Logout 1.0 (the
//! provider posts a logout token) and Front-Channel Logout 1.0 (the provider frames a
//! page with `iss` and `sid`).
//!
//! A logout token is verified in full by the provider that issued it (see
//! `portcullis_identity::OidcProvider::verify_logout_token`) and its `jti` recorded in
//! the session store, so a token is acted on once across every replica. With a `sid`,
//! the sessions of that provider session end; with only a `sub`, every session of the
//! user at that provider, and bearer tokens issued before now are refused. Anything that
//! fails (forged, expired, replayed, unparsable) ends nothing and is answered 400.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use portcullis_identity::{IdentityError, OidcProvider, unverified_issuer};
use portcullis_session::{Index, SessionStore};
use serde_json::json;

use super::endpoints::LOGIN;
use super::{App, body_refused, query_param, session_id, with_cookie};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::inbound::RequestBody;
use crate::metrics::{add, inc};
use crate::pages;

/// How long a logout token's `jti` is remembered: longer than a token is accepted.
const REPLAY_TTL: Duration = Duration::from_secs(600);

/// §2.8: 400 with an OAuth-style error, never cached.
fn logout_error(status: StatusCode, error: &str, description: &str) -> Response<ProxyBody> {
    let mut resp = pages::json(
        status,
        &json!({"error": error, "error_description": description}),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl App {
    pub(super) async fn backchannel_logout(
        &self,
        req: Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let Some(auth) = &self.auth else {
            return ProxyError::NotFound.into_response(false, LOGIN.path);
        };
        let refuse = |why: &str| {
            inc(&self.metrics.logout_tokens_refused);
            tracing::warn!(reason = %why, "back-channel logout refused");
            logout_error(StatusCode::BAD_REQUEST, "invalid_request", why)
        };
        let (parts, body) = req.into_parts();
        let body = match self.bodies.read(&parts.headers, body).await {
            Ok(body) => body,
            Err(e) => return body_refused(e, false),
        };
        let Some(token) = form_urlencoded::parse(&body.bytes)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
        else {
            return refuse("the form has no logout_token");
        };
        let Some(iss) = unverified_issuer(&token) else {
            return refuse("the logout token is not a JWT with an issuer");
        };
        super::authn::discover_all(auth).await;
        let mut refusal = None;
        let mut verified = None;
        for provider in auth
            .providers
            .iter()
            .filter_map(|p| p.as_oidc())
            .filter(|p| p.issued(&iss))
        {
            match provider.verify_logout_token(&token).await {
                Ok(t) => {
                    verified = Some((provider, t));
                    break;
                }
                Err(e @ IdentityError::ProviderUnavailable { .. }) => {
                    tracing::error!(error = %e, "back-channel logout: the provider's keys are unavailable");
                    return logout_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the provider's keys cannot be fetched now",
                    );
                }
                Err(e) => {
                    refusal.get_or_insert(e.to_string());
                }
            }
        }
        let Some((provider, t)) = verified else {
            return refuse(&refusal.unwrap_or_else(|| "issued by no configured provider".into()));
        };
        let name = provider.name();
        match auth
            .sessions
            .remember_once(&format!("logout-token:{name}"), &t.jti, REPLAY_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => return refuse("this logout token was already used"),
            Err(e) => return self.logout_store_failed(e),
        }
        let ended = match (&t.sid, &t.sub) {
            (Some(sid), _) => {
                auth.sessions
                    .revoke_indexed(
                        &Index::ProviderSession {
                            provider: name,
                            sid,
                        }
                        .key(),
                    )
                    .await
            }
            (None, Some(sub)) => {
                let account = Index::Account {
                    provider: name,
                    id: sub,
                }
                .key();
                match auth.sessions.set_revoked_at(&account, t.iat).await {
                    Ok(()) => auth.sessions.revoke_indexed(&account).await,
                    Err(e) => Err(e),
                }
            }
            (None, None) => Ok(0),
        };
        let ended = match ended {
            Ok(n) => n,
            Err(e) => return self.logout_store_failed(e),
        };
        add(&self.metrics.ended_backchannel, ended);
        tracing::info!(
            provider = %name,
            user = t.sub.as_deref().unwrap_or(""),
            by = if t.sid.is_some() { "sid" } else { "sub" },
            sessions = ended,
            "back-channel logout: sessions ended"
        );
        let mut resp = Response::new(ProxyBody::empty());
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    fn logout_store_failed(&self, e: portcullis_session::StoreError) -> Response<ProxyBody> {
        inc(&self.metrics.store_errors);
        tracing::error!(error = %e, "logout from the provider could not be recorded: the session store is unavailable");
        logout_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the session store is unavailable",
        )
    }

    /// Front-channel logout: the provider frames this page in the browser with its
    /// `iss` and the `sid` of the session that ended there. Without them (a provider
    /// that sends neither), the browser's own session cookie, if the frame carries it.
    pub(super) async fn frontchannel_logout(
        &self,
        req: &Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let Some(auth) = &self.auth else {
            return ProxyError::NotFound.into_response(false, LOGIN.path);
        };
        super::authn::discover_all(auth).await;
        let oidc: Vec<&std::sync::Arc<OidcProvider>> =
            auth.providers.iter().filter_map(|p| p.as_oidc()).collect();
        let mut ended = 0;
        match (query_param(req, "iss"), query_param(req, "sid")) {
            (Some(iss), Some(sid)) if !sid.is_empty() => {
                let Some(provider) = oidc.iter().find(|p| p.issued(&iss)) else {
                    return logout_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "iss names no configured provider",
                    );
                };
                let index = Index::ProviderSession {
                    provider: provider.name(),
                    sid: &sid,
                };
                match auth.sessions.revoke_indexed(&index.key()).await {
                    Ok(n) => ended = n,
                    Err(e) => return self.logout_store_failed(e),
                }
                tracing::info!(provider = %provider.name(), by = "sid", sessions = ended, "front-channel logout: sessions ended");
            }
            (Some(_), _) | (_, Some(_)) => {
                return logout_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "iss and sid go together",
                );
            }
            (None, None) => {
                if let Some(id) = session_id(req.headers(), &auth.session_cookie.name) {
                    match auth.sessions.delete(&id).await {
                        Ok(()) => ended = 1,
                        Err(e) => return self.logout_store_failed(e),
                    }
                    tracing::info!(by = "cookie", "front-channel logout: session ended");
                }
            }
        }
        add(&self.metrics.ended_frontchannel, ended);
        // Only the providers' own pages may frame this one.
        let ancestors: Vec<String> = oidc
            .iter()
            .filter_map(|p| p.issuer())
            .filter_map(|iss| url::Url::parse(&iss).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .collect();
        let ancestors = if ancestors.is_empty() {
            "'none'".to_string()
        } else {
            ancestors.join(" ")
        };
        with_cookie(
            pages::framed_logout(&ancestors),
            &auth.session_cookie.clear(),
        )
    }
}
