//! The login flow: sending a browser to its provider (or the provider choice), and the
//! callback that turns the provider's answer into a session: the state checked against
//! the login cookie, the code exchanged (or the implicit flow's ID token verified), the
//! directory consulted, the policy asked, a fresh session created.

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use portcullis_config::{Flow, ResponseMode};
use portcullis_identity::{IdentityError, LoginStep, Provider, StepUp};
use portcullis_policy::Route;
use portcullis_policy::{PolicyDecision, Subject};
use portcullis_session::{SessionData, SessionStore, identity_keys};

use super::authn::{Principal, session_tokens};
use super::decide::Entry;
use super::endpoints::LOGIN;
use super::{
    App, Auth, ConnInfo, body_refused, query_param, session_cookie_value, session_id, with_cookie,
};
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::inbound::RequestBody;
use crate::login_state::{LoginState, LoginStateError};
use crate::metrics::{ProviderCall, inc};
use crate::pages;
use crate::return_to;

impl App {
    /// What an unauthenticated request gets: a browser is sent to log in, anything else
    /// gets a 401.
    pub(super) async fn challenge(
        &self,
        auth: &Auth,
        route: Option<&Route>,
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
        // The route's own provider, else the only one; several: the chooser.
        let provider = route
            .and_then(|r| r.provider.as_deref())
            .and_then(|name| auth.providers.iter().find(|p| p.name() == name))
            .or(match auth.providers.as_slice() {
                [only] => Some(only),
                _ => None,
            });
        let link = login_link(provider.map(|p| p.name()), &return_to, None);
        let mut resp = if html && navigates {
            match provider {
                Some(p) => self
                    .start_login(auth, p, return_to, None)
                    .await
                    .unwrap_or_else(|e| e.into_response(true, LOGIN.path)),
                None => pages::redirect(&link),
            }
        } else if html {
            pages::unauthenticated(true, &link)
        } else {
            pages::unauthenticated(false, LOGIN.path)
        };
        // A cookie that did not authenticate is stale: forget it. (On a route with its
        // own provider it may be a live session of another provider: keep that.)
        let live_elsewhere = route.is_some_and(|r| r.provider.is_some());
        if had_cookie && !live_elsewhere {
            resp = with_cookie(resp, &auth.session_cookie.clear());
        }
        resp
    }

    /// A signed-in user a route wants to sign in again (too long ago, or not strongly
    /// enough): a browser goes straight back to its provider, which re-authenticates and
    /// returns it to the same URL; anything else gets RFC 9470's 401.
    pub(super) async fn step_up(
        &self,
        auth: &Auth,
        route: &Route,
        step: &StepUp,
        who: &Principal,
        req: &Request<RequestBody>,
        html: bool,
    ) -> Response<ProxyBody> {
        let return_to = req
            .uri()
            .path_and_query()
            .and_then(|pq| return_to::validate(pq.as_str(), &auth.return_rules))
            .unwrap_or_else(|| "/".into());
        let provider_name = route
            .provider
            .as_deref()
            .unwrap_or(&who.identity().provider);
        let provider = auth.providers.iter().find(|p| p.name() == provider_name);
        let navigates = req.method() == Method::GET || req.method() == Method::HEAD;
        if html
            && navigates
            && let Some(provider) = provider
        {
            return self
                .start_login(auth, provider, return_to, Some(step))
                .await
                .unwrap_or_else(|e| e.into_response(true, LOGIN.path));
        }
        insufficient_authentication(
            &login_link(Some(provider_name), &return_to, Some(step)),
            step,
        )
    }

    async fn start_login(
        &self,
        auth: &Auth,
        provider: &Provider,
        return_to: String,
        step_up: Option<&StepUp>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let config = provider.config();
        let implicit = config.flow == Flow::Implicit;
        let redirect_uri = match (&auth.implicit_redirect, implicit, config.response_mode) {
            (Some((url, _)), true, ResponseMode::Fragment) => url.as_str(),
            _ => auth.redirect_url.as_str(),
        };
        let form_post = implicit && config.response_mode == ResponseMode::FormPost;
        let request = provider
            .authorization_request(redirect_uri, step_up)
            .await?;
        let state = LoginState {
            state: request.state,
            nonce: request.nonce,
            pkce_verifier: request.pkce_verifier,
            provider: provider.name().to_string(),
            return_to,
            issued_at: portcullis_core::time::unix_now(),
            max_age: step_up.and_then(|s| s.max_age),
            acr_values: step_up.map(|s| s.acr_values.clone()).unwrap_or_default(),
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
        // A step-up asked for by a route (through a proxy in front that relays our
        // login URL): the provider must authenticate the user again.
        let max_age = query_param(req, "max_age").and_then(|v| v.parse::<u64>().ok());
        let acr_values: Vec<String> = query_param(req, "acr_values")
            .map(|v| {
                v.split(' ')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let step = (max_age.is_some() || !acr_values.is_empty()).then_some(StepUp {
            max_age,
            acr_values,
        });
        self.start_login(auth, chosen, return_to, step.as_ref())
            .await
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
                    login_link(Some(p.name()), return_to, None),
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
        let client = self.origin(conn, &headers, req_uri).client_ip;
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
        let asked = std::time::Instant::now();
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
        self.metrics
            .provider_call(provider.name(), ProviderCall::Login, asked);
        // A step-up login must really be fresh (and strong enough): a provider that
        // answered from its own old session would send the browser round in a loop.
        if let Some(max_age) = login.max_age {
            const SKEW: u64 = 60;
            let fresh = identity.auth_time.is_some_and(|t| {
                portcullis_core::time::unix_now().saturating_sub(t) <= max_age + SKEW
            });
            if !fresh {
                return Err(ProxyError::BadLogin(
                    "The identity provider did not sign you in again, as this page requires."
                        .into(),
                ));
            }
        }
        if !login.acr_values.is_empty()
            && !identity
                .acr()
                .as_ref()
                .is_some_and(|acr| login.acr_values.iter().any(|a| **a == **acr))
        {
            return Err(ProxyError::BadLogin(
                "The identity provider did not sign you in as strongly as this page requires."
                    .into(),
            ));
        }
        let (provisioning, directory_user, teams) = self.directory_view(&identity).await?;
        if let PolicyDecision::Deny(reason) = auth.policy.decide(&Subject {
            identity: &identity,
            teams: &teams,
            provisioning,
        }) {
            let kind = reason.kind();
            let reason = reason.to_string();
            self.refused(
                identity.display(),
                &identity.provider,
                (kind, &reason),
                client,
                Entry::Login,
                None,
            );
            return Err(ProxyError::Denied {
                who: identity.display().to_string(),
                reason,
            });
        }
        // The provider may have disabled the account since (a shared signal): a login
        // it still answers is refused until the account is enabled again.
        let keys = identity_keys(
            &identity,
            directory_user
                .as_ref()
                .map(|d| (d.tenant.as_str(), d.id.as_str())),
        );
        if auth.sessions.marks(&keys).await?.disabled {
            let reason = "the identity provider disabled the account".to_string();
            self.refused(
                identity.display(),
                &identity.provider,
                ("account_disabled", &reason),
                client,
                Entry::Login,
                None,
            );
            return Err(ProxyError::Denied {
                who: identity.display().to_string(),
                reason,
            });
        }
        // A fresh session every login; any session the browser had ends.
        if let Some(old) = session_id(headers, &auth.session_cookie.name) {
            let _ = auth.sessions.delete(&old).await;
        }
        let who = identity.display().to_string();
        let mut data = SessionData::new(identity, auth.lifetime);
        data.directory_user = directory_user.map(Box::new);
        data.teams = teams.into();
        data.tokens = tokens.as_ref().and_then(|t| session_tokens(auth, t));
        data.client = Some(client);
        if let Some(agent) = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            data.set_user_agent(agent);
        }
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
                self.refused(
                    &who,
                    name,
                    ("provider_refused", &reason),
                    client,
                    Entry::Login,
                    None,
                );
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
pub(super) fn login_link(provider: Option<&str>, return_to: &str, step: Option<&StepUp>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(p) = provider {
        query.append_pair("provider", p);
    }
    query.append_pair("rd", return_to);
    if let Some(step) = step {
        if let Some(max_age) = step.max_age {
            query.append_pair("max_age", &max_age.to_string());
        }
        if !step.acr_values.is_empty() {
            query.append_pair("acr_values", &step.acr_values.join(" "));
        }
    }
    format!("{}?{}", LOGIN.path, query.finish())
}

/// RFC 9470 §3: the request needs a fresher (`max_age`) or stronger (`acr_values`) login.
pub(super) fn insufficient_authentication(login_href: &str, step: &StepUp) -> Response<ProxyBody> {
    let mut resp = pages::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({
            "error": "insufficient_user_authentication",
            "message": "this needs a fresher or stronger sign-in",
            "login_url": login_href,
        }),
    );
    let mut challenge = String::from(
        "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", error_description=\"A fresher or stronger sign-in is needed\"",
    );
    if let Some(max_age) = step.max_age {
        challenge.push_str(&format!(", max_age=\"{max_age}\""));
    }
    if !step.acr_values.is_empty() {
        challenge.push_str(&format!(", acr_values=\"{}\"", step.acr_values.join(" ")));
    }
    if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}
