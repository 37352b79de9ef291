//! The signed-in user's own endpoints: `/api/v1/auth/me`, and logout (this session, or
//! every session of the user with `?everywhere=true`), refused when a browser posts it
//! from another site, optionally continuing to the provider's own logout.

use http::header;
use http::{Request, Response, StatusCode};
use portcullis_session::{Index, SessionData, SessionStore};
use serde_json::json;

use super::authn::Principal;
use super::endpoints::LOGIN;
use super::{App, Auth, ConnInfo, query_param, session_id, wants_html, with_cookie};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::inbound::RequestBody;
use crate::metrics::inc;
use crate::pages;
use crate::return_to;

impl App {
    pub(super) async fn me(
        &self,
        req: &Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let principal = match &self.auth {
            Some(auth) => self.authenticate(auth, req.headers()).await?,
            None => None,
        };
        Ok(match principal {
            Some(p) => pages::json(StatusCode::OK, &principal_json(&p)),
            None => pages::json_error(StatusCode::UNAUTHORIZED, "unauthenticated", "no session"),
        })
    }

    pub(super) async fn logout(
        &self,
        conn: &ConnInfo,
        req: &Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(auth) = &self.auth else {
            return Ok(pages::json(
                StatusCode::OK,
                &json!({"message": "Logged out successfully"}),
            ));
        };
        if !self.same_site_post(auth, conn, req) {
            tracing::warn!("logout refused: the request came from another site");
            return Err(ProxyError::CrossSite);
        }
        // `?everywhere=true` ends every session of the user, on every device and replica.
        let everywhere = query_param(req, "everywhere").is_some_and(|v| v == "true" || v == "1");
        let mut ended = 0;
        let mut provider_logout = None;
        if let Some(id) = session_id(req.headers(), &auth.session_cookie.name) {
            if let Some(session) = auth.sessions.load(&id).await? {
                if everywhere {
                    let account = Index::Account {
                        provider: &session.identity.provider,
                        id: session.identity.id(),
                    };
                    ended = auth.sessions.revoke_indexed(&account.key()).await?;
                    tracing::info!(user = %session.identity.display(), sessions = ended, "logged out everywhere");
                } else {
                    auth.sessions.delete(&id).await?;
                    ended = 1;
                }
                if auth.provider_logout {
                    provider_logout = self.provider_logout_url(auth, &session).await;
                }
            }
            inc(&self.metrics.logouts);
        }
        let mut body = json!({"message": "Logged out successfully", "sessions_ended": ended});
        if let Some(url) = &provider_logout {
            body["logout_url"] = json!(url);
        }
        let resp = match (&provider_logout, wants_html(req.headers())) {
            // A browser's sign-out form: on to the provider, which comes back after.
            (Some(url), true) => {
                let mut r = pages::redirect(url);
                *r.status_mut() = StatusCode::SEE_OTHER;
                r
            }
            (None, true) => pages::page(
                StatusCode::OK,
                "Signed out",
                "You are signed out.",
                Some(pages::Action {
                    label: "Sign in again",
                    href: LOGIN.path,
                }),
            ),
            (_, false) => pages::json(StatusCode::OK, &body),
        };
        Ok(with_cookie(resp, &auth.session_cookie.clear()))
    }

    /// Whether a state-changing POST comes from a page of this application, not from
    /// another site (login CSRF's sibling: a link that logs users out everywhere). A
    /// browser names the page's origin in `Origin` (and says `Sec-Fetch-Site`); it must
    /// be the host the request was sent to or one Portcullis may send users back to.
    /// Clients that are not browsers send neither and are let through.
    fn same_site_post(&self, auth: &Auth, conn: &ConnInfo, req: &Request<RequestBody>) -> bool {
        let headers = req.headers();
        let site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return site.is_none_or(|s| s == "same-origin" || s == "none");
        };
        if site.as_deref() == Some("same-origin") {
            return true;
        }
        let here = self.origin(conn, headers, req.uri());
        let own = here
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("{}://{h}", here.proto));
        if own
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        origin != "null" && return_to::validate(&format!("{origin}/"), &auth.return_rules).is_some()
    }

    /// OpenID Connect RP-Initiated Logout 1.0: the provider's `end_session_endpoint`
    /// with the session's ID token as hint, our client id, and where to come back to.
    async fn provider_logout_url(&self, auth: &Auth, session: &SessionData) -> Option<String> {
        let provider = auth
            .providers
            .iter()
            .find(|p| p.name() == &*session.identity.provider)?;
        let endpoint = provider.end_session_endpoint().await?;
        let mut url = url::Url::parse(&endpoint).ok()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = session.tokens.as_ref().and_then(|t| t.id_token.as_deref()) {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("client_id", &provider.config().client_id);
            if let Some(back) = &auth.post_logout_redirect {
                q.append_pair("post_logout_redirect_uri", back);
            }
        }
        Some(url.into())
    }
}

/// What `/api/v1/auth/me` answers: the identity, with the provider's groups and the
/// directory's teams together under `groups`.
fn principal_json(principal: &Principal) -> serde_json::Value {
    let who = principal.identity();
    json!({
        "id": who.id(),
        "email": who.email(),
        "name": who.name(),
        "username": who.username(),
        "provider": who.provider,
        "groups": principal.all_groups().collect::<Vec<_>>(),
    })
}
