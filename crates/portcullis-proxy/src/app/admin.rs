//! The admin listener's requests: `/healthz`, `/readyz`, `/metrics`, and the admin API,
//! which lists and ends sessions. Nothing here is reachable on the public listener.
//!
//! - `GET /api/v1/admin/sessions?user=<email, user name or subject>` lists the user's
//!   live sessions (at any provider; `&provider=` narrows it): a handle, the provider,
//!   created, last seen, expires, client address and user agent. Never a session id or a
//!   token: the handle is the SHA-256 of the id, which cannot be used as a cookie.
//! - `DELETE /api/v1/admin/sessions?user=...` ends all of them (and refuses the user's
//!   bearer tokens issued before now); `DELETE /api/v1/admin/sessions/<handle>` one.
//!
//! Every call needs `Authorization: Bearer <admin.token>`, compared in constant time.
//! Every revocation is an audit log line: who asked (the client address and the
//! optional `X-Portcullis-Actor` header), whose sessions, how many.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use portcullis_config::ExposeSecret;
use portcullis_session::{Index, SessionInfo, SessionStore};
use serde_json::{Value, json};

use super::{App, Auth, ConnInfo, query_param};
use crate::body::ProxyBody;
use crate::inbound::RequestBody;
use crate::metrics::add;
use crate::pages;

const SESSIONS: &str = "/api/v1/admin/sessions";

/// The longest `user` or `X-Portcullis-Actor` accepted.
const MAX_NAME: usize = 512;

fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    pages::json_error(status, code, message)
}

/// `405` with the methods the path takes.
fn wrong_method(allow: &'static str, message: &str) -> Response<ProxyBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

impl App {
    /// Handles one request on the admin listener. Never fails.
    pub async fn handle_admin(
        &self,
        conn: &ConnInfo,
        req: Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let path = req.uri().path();
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        match path {
            "/healthz" | "/readyz" | "/metrics" if !read => wrong_method("GET, HEAD", "use GET"),
            "/healthz" => pages::text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readyz().await,
            "/metrics" => self.metrics(),
            _ if path == SESSIONS || path.starts_with(&format!("{SESSIONS}/")) => {
                if !self.admin_authorized(&req) {
                    tracing::warn!(client = %conn.peer.ip(), path, "admin API refused: missing or wrong admin token");
                    let mut resp = error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "send Authorization: Bearer <admin.token>",
                    );
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return resp;
                }
                let Some(auth) = &self.auth else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "no_sessions",
                        "authentication is off: there are no sessions",
                    );
                };
                self.admin_sessions(auth, conn, &req).await
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
        }
    }

    fn admin_authorized(&self, req: &Request<RequestBody>) -> bool {
        let Some(token) = &self.admin_token else {
            return false;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, presented)| {
                portcullis_core::constant_time_eq(
                    presented.trim().as_bytes(),
                    token.expose_secret().as_bytes(),
                )
            })
    }

    async fn admin_sessions(
        &self,
        auth: &Auth,
        conn: &ConnInfo,
        req: &Request<RequestBody>,
    ) -> Response<ProxyBody> {
        let actor = req
            .headers()
            .get("x-portcullis-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|a| !a.is_empty() && a.len() <= MAX_NAME)
            .unwrap_or("admin token")
            .to_string();
        let client = conn.peer.ip();
        let handle = req
            .uri()
            .path()
            .strip_prefix(SESSIONS)
            .and_then(|rest| rest.strip_prefix('/'));
        let store_failed = |e: portcullis_session::StoreError| {
            tracing::error!(error = %e, "admin API: the session store is unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "the session store cannot be reached",
            )
        };
        if let Some(handle) = handle {
            if req.method() != Method::DELETE {
                return wrong_method("DELETE", "a session is ended with DELETE");
            }
            let ended = match auth.sessions.revoke_handle(handle).await {
                Ok(ended) => usize::from(ended),
                Err(e) => return store_failed(e),
            };
            add(&self.metrics.ended_admin, ended);
            tracing::warn!(
                audit = true,
                actor = %actor,
                client = %client,
                session = %handle.get(..12).unwrap_or(handle),
                sessions = ended,
                "admin ended a session"
            );
            let status = if ended == 0 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            return pages::json(status, &json!({"ended": ended}));
        }
        let Some(user) = query_param(req, "user").filter(|u| !u.is_empty() && u.len() <= MAX_NAME)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "name the user: ?user=<email, user name or subject>",
            );
        };
        let provider = query_param(req, "provider");
        let names = [
            Index::Email(&user).key(),
            Index::Username(&user).key(),
            Index::Subject(&user).key(),
        ];
        let mut found: Vec<SessionInfo> = Vec::new();
        for name in &names {
            match auth.sessions.list_indexed(name).await {
                Ok(list) => {
                    for s in list {
                        if !found.iter().any(|f| f.handle == s.handle) {
                            found.push(s);
                        }
                    }
                }
                Err(e) => return store_failed(e),
            }
        }
        found.retain(|s| {
            provider
                .as_deref()
                .is_none_or(|p| &*s.data.identity.provider == p)
        });
        match *req.method() {
            Method::GET | Method::HEAD => {
                found.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
                let sessions: Vec<Value> = found.iter().map(describe).collect();
                pages::json(StatusCode::OK, &json!({"user": user, "sessions": sessions}))
            }
            Method::DELETE => {
                let mut ended = 0;
                if provider.is_some() {
                    // Narrowed to one provider: end exactly the sessions listed.
                    for s in &found {
                        match auth.sessions.revoke_handle(&s.handle).await {
                            Ok(true) => ended += 1,
                            Ok(false) => {}
                            Err(e) => return store_failed(e),
                        }
                    }
                } else {
                    let now = portcullis_core::time::unix_now();
                    for name in &names {
                        // Bearer tokens issued before now are refused too.
                        if let Err(e) = auth.sessions.set_revoked_at(name, now).await {
                            return store_failed(e);
                        }
                        match auth.sessions.revoke_indexed(name).await {
                            Ok(n) => ended += n,
                            Err(e) => return store_failed(e),
                        }
                    }
                }
                add(&self.metrics.ended_admin, ended);
                tracing::warn!(
                    audit = true,
                    actor = %actor,
                    client = %client,
                    user = %user,
                    provider = provider.as_deref().unwrap_or(""),
                    sessions = ended,
                    "admin ended the sessions of a user"
                );
                pages::json(StatusCode::OK, &json!({"user": user, "ended": ended}))
            }
            _ => wrong_method("GET, HEAD, DELETE", "list with GET, end with DELETE"),
        }
    }
}

/// A session as the admin API shows it.
fn describe(s: &SessionInfo) -> Value {
    let d = &s.data;
    json!({
        "id": s.handle,
        "provider": d.identity.provider,
        "user": d.identity.display(),
        "subject": d.identity.id(),
        "created_at": d.created_at,
        "last_seen": s.last_seen,
        "expires_at": d.expires_at,
        "client": d.client,
        "user_agent": d.user_agent,
    })
}
