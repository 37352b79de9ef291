//! The login flow: sending a browser to its provider (or the provider choice), and the
//! callback that turns the provider's answer into a session: the state checked against
//! the login cookie, the code exchanged (or the implicit flow's ID token verified), the
//! directory consulted, the policy asked, a fresh session created.

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use portcullis_config::{Flow, ResponseMode};
use portcullis_identity::{IdentityError, LoginStep, Provider};
use portcullis_policy::{PolicyDecision, Subject};
use portcullis_session::{SessionData, SessionId, SessionStore};

use super::authn::session_tokens;
use super::decide::Entry;
use super::endpoints::LOGIN;
use super::{App, Auth, ConnInfo, body_refused, query_param, session_cookie_value, with_cookie};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarding;
use crate::inbound::RequestBody;
use crate::login_state::{LoginState, LoginStateError};
use crate::metrics::inc;
use crate::pages;
use crate::return_to;

impl App {
    /// What an unauthenticated request gets: a browser is sent to log in, anything else
    /// gets a 401.
    pub(super) async fn challenge(
        &self,
        auth: &Auth,
        req: &Request<RequestBody>,
        html: bool,
    ) -> Response<ProxyBody> {
        let had_cookie = session_cookie_value(req.headers(), &auth.session_cookie.name).is_some();
        let return_to = req
            .uri()
            .path_and_query()
            .and_then(|pq| return_to::validate(pq.as_str(), &auth.return_rules))
            .unwrap_or_else(|| "/".into());
        let navigates = req.method() == Method::GET || req.method() == Method::HEAD;
        let mut resp = if html && navigates {
            match auth.providers.as_slice() {
                [only] => self
                    .start_login(auth, only, return_to)
                    .await
                    .unwrap_or_else(|e| e.into_response(true, LOGIN.path)),
                _ => pages::redirect(&login_link(None, &return_to)),
            }
        } else if html {
            pages::unauthenticated(true, &login_link(None, &return_to))
        } else {
            pages::unauthenticated(false, LOGIN.path)
        };
        if had_cookie {
            resp = with_cookie(resp, &auth.session_cookie.clear());
        }
        resp
    }

    async fn start_login(
        &self,
        auth: &Auth,
        provider: &Provider,
        return_to: String,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let config = provider.config();
        let implicit = config.flow == Flow::Implicit;
        let redirect_uri = match (&auth.implicit_redirect, implicit, config.response_mode) {
            (Some((url, _)), true, ResponseMode::Fragment) => url.as_str(),
            _ => auth.redirect_url.as_str(),
        };
        let form_post = implicit && config.response_mode == ResponseMode::FormPost;
        let request = provider.authorization_request(redirect_uri).await?;
        let state = LoginState {
            state: request.state,
            nonce: request.nonce,
            pkce_verifier: request.pkce_verifier,
            provider: provider.name().to_string(),
            return_to,
            issued_at: portcullis_core::time::unix_now(),
        };
        Ok(with_cookie(
            pages::redirect(&request.url),
            &auth.login.set(&state, form_post),
        ))
    }

    pub(super) async fn login(
        &self,
        req: &Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(auth) = &self.auth else {
            return Ok(pages::json_error(
                StatusCode::NOT_FOUND,
                "auth_disabled",
                "authentication is disabled",
            ));
        };
        let return_to = query_param(req, "rd")
            .and_then(|rd| return_to::validate(&rd, &auth.return_rules))
            .unwrap_or_else(|| "/".into());
        let chosen = match query_param(req, "provider") {
            Some(name) => match auth.providers.iter().find(|p| p.name() == name) {
                Some(p) => p,
                None => return Ok(self.provider_choice(auth, &return_to, StatusCode::BAD_REQUEST)),
            },
            None => match auth.providers.as_slice() {
                [only] => only,
                _ => return Ok(self.provider_choice(auth, &return_to, StatusCode::OK)),
            },
        };
        self.start_login(auth, chosen, return_to).await
    }

    /// The page offering one sign-in button per provider.
    fn provider_choice(
        &self,
        auth: &Auth,
        return_to: &str,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let buttons: Vec<(String, String)> = auth
            .providers
            .iter()
            .map(|p| {
                (
                    format!("Log in with {}", p.display_name()),
                    login_link(Some(p.name()), return_to),
                )
            })
            .collect();
        auth.sign_in_page.render(status, &buttons)
    }

    pub(super) async fn callback(
        &self,
        conn: &ConnInfo,
        req: Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let Some(auth) = &self.auth else {
            return ProxyError::NotFound.into_response(true, LOGIN.path);
        };
        let headers = req.headers().clone();
        let uri = req.uri().clone();
        let req_uri = &uri;
        let params: Vec<(String, String)> = if req.method() == Method::POST {
            // Only a browser that started a login here has a login cookie; nobody else
            // gets to make Portcullis hold a body.
            if !auth.login.any_open(&headers) {
                return ProxyError::BadLogin(LoginStateError::Missing.explain().to_string())
                    .into_response(true, LOGIN.path);
            }
            match self.bodies.read(&headers, req.into_body()).await {
                Ok(body) => parse_form(&body.bytes),
                Err(e) => return body_refused(e, true),
            }
        } else {
            parse_form(req.uri().query().unwrap_or("").as_bytes())
        };
        let state = param(&params, "state").unwrap_or("");
        let clear_login = auth.login.clear(state);
        let client =
            forwarding::resolve(conn.peer, conn.tls, &headers, req_uri, &self.trusted).client_ip;
        let mut resp = match self
            .finish_login(auth, &headers, state, &params, client)
            .await
        {
            Ok(resp) => {
                inc(&self.metrics.logins_succeeded);
                resp
            }
            Err(e) => {
                if matches!(
                    e,
                    ProxyError::ProviderRefused(_) | ProxyError::Denied { .. }
                ) {
                    inc(&self.metrics.logins_refused);
                } else {
                    inc(&self.metrics.logins_failed);
                }
                e.into_response(true, LOGIN.path)
            }
        };
        if let Some(clear) = clear_login {
            resp = with_cookie(resp, &clear);
        }
        resp
    }

    async fn finish_login(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
        state: &str,
        params: &[(String, String)],
        client: IpAddr,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let param = |name: &str| param(params, name);
        if let Some(error) = param("error") {
            let description = param("error_description").unwrap_or("");
            tracing::warn!(error, description, "identity provider refused the login");
            let why = if description.is_empty() {
                error.to_string()
            } else {
                format!("{error} ({description})")
            };
            return Err(ProxyError::ProviderRefused(why));
        }
        let login = auth.login.take(headers, state).map_err(|e| {
            tracing::warn!(reason = ?e, "login callback refused: state does not match a login started in this browser");
            ProxyError::BadLogin(e.explain().to_string())
        })?;
        let provider = auth
            .providers
            .iter()
            .find(|p| p.name() == login.provider)
            .ok_or_else(|| {
                ProxyError::BadLogin(
                    "The sign-in was started with a provider that is no longer configured.".into(),
                )
            })?;
        // The answer must be the one this provider's flow produces: never a code for an
        // implicit login or an ID token for a code-flow login.
        let implicit = provider.config().flow == Flow::Implicit;
        let (identity, tokens) = if implicit {
            let id_token = param("id_token").filter(|t| !t.is_empty()).ok_or_else(|| {
                ProxyError::BadLogin("The identity provider sent no ID token.".into())
            })?;
            let identity = provider
                .finish_implicit(id_token, &login.nonce)
                .await
                .map_err(|e| self.login_failed(provider, LoginStep::Identity, e, client))?;
            (identity, None)
        } else {
            let code = param("code").filter(|c| !c.is_empty()).ok_or_else(|| {
                ProxyError::BadLogin("The identity provider sent no authorization code.".into())
            })?;
            let (identity, tokens) = provider
                .finish_login(code, &login.pkce_verifier, &auth.redirect_url, &login.nonce)
                .await
                .map_err(|(step, e)| self.login_failed(provider, step, e, client))?;
            (identity, Some(tokens))
        };
        let (provisioning, directory_user, teams) = self.directory_view(&identity).await?;
        if let PolicyDecision::Deny(reason) = auth.policy.decide(&Subject {
            identity: &identity,
            teams: &teams,
            provisioning,
        }) {
            let reason = reason.to_string();
            self.refused(
                identity.display(),
                &identity.provider,
                &reason,
                client,
                Entry::Login,
            );
            return Err(ProxyError::Denied {
                who: identity.display().to_string(),
                reason,
            });
        }
        // A fresh session every login; any session the browser had ends.
        if let Some(old) =
            session_cookie_value(headers, &auth.session_cookie.name).and_then(SessionId::parse)
        {
            let _ = auth.sessions.delete(&old).await;
        }
        let who = identity.display().to_string();
        let mut data = SessionData::new(identity, auth.lifetime);
        data.directory_user = directory_user;
        data.teams = teams;
        data.tokens = tokens.as_ref().and_then(|t| session_tokens(auth, t));
        let id = auth.sessions.create(data).await?;
        tracing::info!(user = %who, provider = %provider.name(), "login succeeded");
        Ok(with_cookie(
            pages::redirect(&login.return_to),
            &auth.session_cookie.set(id.expose()),
        ))
    }

    /// Logs a failed login under the message operators search for at its step (the
    /// token exchange, the user info), and turns a provider-level refusal into a denial.
    fn login_failed(
        &self,
        provider: &Provider,
        step: LoginStep,
        e: IdentityError,
        client: IpAddr,
    ) -> ProxyError {
        let name = provider.name();
        match e {
            _ if step == LoginStep::TokenExchange => {
                tracing::warn!(provider = %name, "OAuth token exchange failed: {e}")
            }
            IdentityError::TokenExchange { .. } => {
                tracing::warn!(provider = %name, "OAuth token exchange failed: {e}")
            }
            IdentityError::InvalidToken(ref reason) => {
                tracing::warn!(provider = %name, "ID token rejected: {reason}")
            }
            IdentityError::NotAllowed { who, reason } => {
                self.refused(&who, name, &reason, client, Entry::Login);
                return ProxyError::Denied { who, reason };
            }
            IdentityError::ProviderUnavailable { .. } | IdentityError::UserInfo(_) => {
                tracing::warn!(provider = %name, "Failed to get user info: {e}")
            }
        }
        ProxyError::Identity(e)
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// `/api/v1/auth/login?provider=...&rd=...`
pub(super) fn login_link(provider: Option<&str>, return_to: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(p) = provider {
        query.append_pair("provider", p);
    }
    query.append_pair("rd", return_to);
    format!("{}?{}", LOGIN.path, query.finish())
}
