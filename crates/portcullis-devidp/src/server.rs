//! The development provider's HTTP endpoints.
//!
//! Codes are single-use and live one minute; PKCE with S256 is required; redirect URIs
//! must match a registered one exactly, and an unregistered one is never redirected to.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_core::constant_time_eq;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::key::SigningKey;
use crate::pages;

const CODE_LIFETIME: Duration = Duration::from_secs(60);
const TOKEN_LIFETIME_SECS: u64 = 3600;
const ID_TOKEN_LIFETIME_SECS: u64 = 300;
const MAX_BODY: usize = 64 * 1024;

/// A relying party registered with the provider.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    /// `None` registers a public client (PKCE only).
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
struct User {
    username: String,
    email: String,
    groups: Vec<String>,
}

/// The subject id of a user name: the same every time the same user name signs in.
pub fn subject_of(username: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        username.to_lowercase().as_bytes(),
    );
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("dev-{hex}")
}

impl User {
    fn subject(&self) -> String {
        subject_of(&self.username)
    }

    fn claims(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("sub".into(), json!(self.subject()));
        m.insert("email".into(), json!(self.email));
        m.insert("email_verified".into(), json!(true));
        m.insert("name".into(), json!(self.username));
        m.insert("preferred_username".into(), json!(self.username));
        m.insert("groups".into(), json!(self.groups));
        m
    }
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    /// The `offline_access` scope was asked for: the tokens include a refresh token.
    offline: bool,
    user: User,
    expires: Instant,
}

struct State {
    issuer: String,
    key: SigningKey,
    clients: Vec<Client>,
    codes: Mutex<Expiring<Grant>>,
    access_tokens: Mutex<Expiring<(User, Instant)>>,
    /// Refresh token -> (client id, user); a refresh token is used once and replaced.
    refresh_tokens: Mutex<HashMap<String, (String, User)>>,
    /// How long access tokens live (`expires_in`).
    token_lifetime: AtomicU64,
    /// Refresh grants answered with new tokens.
    refreshes: AtomicUsize,
    /// The provider session (`sid`) of each login, by subject, oldest first.
    sids: Mutex<HashMap<String, Vec<String>>>,
}

/// Entries that expire (codes, access tokens), swept of the expired ones when they have
/// doubled since the last sweep: sweeping at every insert made n logins cost n² (100,000
/// logins for a benchmark slowed to a third of their first rate).
struct Expiring<V> {
    entries: HashMap<String, V>,
    sweep_at: usize,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Expiring {
            entries: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

impl<V> Expiring<V> {
    fn insert(&mut self, key: String, value: V, live: impl Fn(&V) -> bool) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, v| live(v));
            self.sweep_at = (2 * self.entries.len()).max(1024);
        }
        self.entries.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        self.entries.remove(key)
    }
}

/// A running development provider. Dropping it stops it.
pub struct DevIdp {
    state: Arc<State>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DevIdp {
    /// Binds `addr` (port 0 picks a free port) and serves until dropped.
    pub async fn start(addr: SocketAddr, clients: Vec<Client>) -> std::io::Result<DevIdp> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            key: SigningKey::generate(),
            clients,
            codes: Mutex::new(Expiring::default()),
            access_tokens: Mutex::new(Expiring::default()),
            refresh_tokens: Mutex::new(HashMap::new()),
            token_lifetime: AtomicU64::new(TOKEN_LIFETIME_SECS),
            refreshes: AtomicUsize::new(0),
            sids: Mutex::new(HashMap::new()),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DevIdp { state, addr, task })
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signs arbitrary claims with the provider's key (tests use it to forge tokens
    /// that only differ from a real one in the claim under test).
    pub fn sign(&self, claims: &Value) -> String {
        self.state.key.sign(claims)
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.state.key
    }

    /// Sets how long the access tokens issued from now on live (tests make them expire
    /// soon, to exercise refreshing).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state
            .token_lifetime
            .store(lifetime.as_secs(), Ordering::Relaxed);
    }

    /// Forgets every refresh token, as a provider does when the user is disabled: the
    /// next refresh is refused with `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        self.state
            .refresh_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How many refresh grants were answered with new tokens.
    pub fn refreshes(&self) -> usize {
        self.state.refreshes.load(Ordering::Relaxed)
    }

    /// The provider sessions (`sid` claims) of `username`'s logins, oldest first: what
    /// a back-channel logout token names.
    pub fn sessions_of(&self, username: &str) -> Vec<String> {
        self.state
            .sids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&subject_of(username))
            .cloned()
            .unwrap_or_default()
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json_response(status: StatusCode, body: &Value) -> Resp {
    respond(status, "application/json", body.to_string())
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

fn redirect(location: &str) -> Resp {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| {
            html(
                StatusCode::BAD_REQUEST,
                pages::error_page("bad redirect URI"),
            )
        })
}

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.extend(form_urlencoded::byte_serialize(k.as_bytes()));
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(v.as_bytes()));
        sep = '&';
    }
    out
}

fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

async fn read_form(req: Request<Incoming>) -> Result<HashMap<String, String>, Resp> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(parse_form(&body.to_bytes())),
        Err(_) => Err(oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "body too large",
        )),
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => discovery(state),
        (Method::GET, "/jwks") => {
            json_response(StatusCode::OK, &json!({"keys": [state.key.jwk()]}))
        }
        (Method::GET, "/authorize") => {
            let params = parse_form(req.uri().query().unwrap_or("").as_bytes());
            authorize(state, params, None)
        }
        (Method::POST, "/authorize") => match read_form(req).await {
            Ok(form) => authorize(state, form, Some(())),
            Err(resp) => resp,
        },
        (Method::POST, "/token") => token(state, req).await,
        (Method::GET, "/userinfo") | (Method::POST, "/userinfo") => userinfo(state, &req),
        (_, "/.well-known/openid-configuration" | "/jwks" | "/authorize" | "/token") => {
            oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "method not allowed",
            )
        }
        _ => html(StatusCode::NOT_FOUND, pages::error_page("not found")),
    }
}

fn discovery(state: &State) -> Resp {
    let i = &state.issuer;
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
            "claims_supported": ["sub", "email", "email_verified", "name", "preferred_username", "groups", "sid"],
        }),
    )
}

const REQUEST_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// GET shows the form; POST (`submitted`) signs the user in.
fn authorize(state: &State, params: HashMap<String, String>, submitted: Option<()>) -> Resp {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let client_id = get("client_id");
    let Some(client) = state.clients.iter().find(|c| c.id == client_id) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error_page("unknown client_id"),
        );
    };
    let redirect_uri = get("redirect_uri");
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error_page("redirect_uri is not registered for this client"),
        );
    }
    let client_state = get("state");
    let fail = |error: &str, description: &str| {
        let mut p = vec![("error", error), ("error_description", description)];
        if !client_state.is_empty() {
            p.push(("state", client_state));
        }
        redirect(&with_params(redirect_uri, &p))
    };
    if get("response_type") != "code" {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
        return fail(
            "invalid_request",
            "PKCE with code_challenge_method=S256 is required",
        );
    }
    if submitted.is_none() {
        let hidden: Vec<(String, String)> = REQUEST_PARAMS
            .iter()
            .filter_map(|k| params.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        return html(StatusCode::OK, pages::login_form(client_id, &hidden, None));
    }
    let username = get("username").trim().to_string();
    if username.is_empty() {
        let hidden: Vec<(String, String)> = REQUEST_PARAMS
            .iter()
            .filter_map(|k| params.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        return html(
            StatusCode::BAD_REQUEST,
            pages::login_form(client_id, &hidden, Some("Enter a user name.")),
        );
    }
    let email = match get("email").trim() {
        "" => format!("{username}@example.com"),
        e => e.to_string(),
    };
    let groups = get("groups")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    let code = portcullis_core::random::token();
    let grant = Grant {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        challenge: get("code_challenge").to_string(),
        nonce: params.get("nonce").cloned(),
        offline: params
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "offline_access")),
        user: User {
            username,
            email,
            groups,
        },
        expires: Instant::now() + CODE_LIFETIME,
    };
    {
        let mut codes = state.codes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        codes.insert(code.clone(), grant, |g| g.expires > now);
    }
    let mut p = vec![("code", code.as_str())];
    if !client_state.is_empty() {
        p.push(("state", client_state));
    }
    redirect(&with_params(redirect_uri, &p))
}

/// The client credentials from Basic auth or the form (RFC 6749 §2.3.1).
fn client_credentials(
    req_auth: Option<&str>,
    form: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    if let Some(basic) = req_auth.and_then(|v| v.strip_prefix("Basic ")) {
        if let Ok(raw) = STANDARD.decode(basic.trim())
            && let Ok(text) = String::from_utf8(raw)
            && let Some((id, secret)) = text.split_once(':')
        {
            let decode = |s: &str| -> String {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            return (Some(decode(id)), Some(decode(secret)));
        }
        return (None, None);
    }
    (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    )
}

async fn token(state: &State, req: Request<Incoming>) -> Resp {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let (client_id, secret) = client_credentials(auth.as_deref(), &form);
    let Some(client) = client_id
        .as_deref()
        .and_then(|id| state.clients.iter().find(|c| c.id == id))
    else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if let Some(expected) = &client.secret {
        let given = secret.unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "wrong client secret",
            );
        }
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {}
        Some("refresh_token") => return refresh(state, client, &form),
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            );
        }
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // Removing the code first makes it single-use even if the rest fails.
    let grant = state
        .codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&code);
    let Some(grant) = grant.filter(|g| g.expires > Instant::now()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code is unknown, expired or already used",
        );
    };
    if grant.client_id != client.id
        || form.get("redirect_uri").map(String::as_str) != Some(grant.redirect_uri.as_str())
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued to another client or redirect_uri",
        );
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    if !constant_time_eq(challenge.as_bytes(), grant.challenge.as_bytes()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        );
    }
    let now = portcullis_core::time::unix_now();
    let mut claims = grant.user.claims();
    claims.insert("iss".into(), json!(state.issuer));
    claims.insert("aud".into(), json!(client.id));
    claims.insert("iat".into(), json!(now));
    claims.insert("auth_time".into(), json!(now));
    claims.insert("exp".into(), json!(now + ID_TOKEN_LIFETIME_SECS));
    // Each login is a session at the provider, named in the ID token (Back-Channel
    // Logout 1.0 §2.1).
    let sid = portcullis_core::random::token();
    claims.insert("sid".into(), json!(sid));
    state
        .sids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(grant.user.subject())
        .or_default()
        .push(sid);
    if let Some(nonce) = &grant.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    let id_token = state.key.sign(&Value::Object(claims));
    issue_tokens(state, &client.id, grant.user, Some(id_token), grant.offline)
}

/// A new access token for `user`, with a refresh token when `offline` (OpenID Connect
/// Core §11: refresh tokens are for the `offline_access` scope).
fn issue_tokens(
    state: &State,
    client_id: &str,
    user: User,
    id_token: Option<String>,
    offline: bool,
) -> Resp {
    let lifetime = state.token_lifetime.load(Ordering::Relaxed);
    let access_token = portcullis_core::random::token();
    {
        let mut tokens = state
            .access_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.insert(
            access_token.clone(),
            (user.clone(), now + Duration::from_secs(lifetime)),
            |(_, exp)| *exp > now,
        );
    }
    let mut answer = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
    });
    if offline {
        let refresh_token = portcullis_core::random::token();
        state
            .refresh_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(refresh_token.clone(), (client_id.to_string(), user));
        answer["refresh_token"] = json!(refresh_token);
    }
    if let Some(id_token) = id_token {
        answer["id_token"] = json!(id_token);
    }
    json_response(StatusCode::OK, &answer)
}

/// `grant_type=refresh_token` (RFC 6749 §6): the refresh token is used up and replaced.
fn refresh(state: &State, client: &Client, form: &HashMap<String, String>) -> Resp {
    let token = form.get("refresh_token").cloned().unwrap_or_default();
    let found = state
        .refresh_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&token);
    match found {
        Some((client_id, user)) if client_id == client.id => {
            state.refreshes.fetch_add(1, Ordering::Relaxed);
            issue_tokens(state, &client.id, user, None, true)
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the refresh token is unknown, revoked or already used",
        ),
    }
}

fn userinfo(state: &State, req: &Request<Incoming>) -> Resp {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let user = state
        .access_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)
        .filter(|(_, exp)| *exp > Instant::now())
        .map(|(u, _)| u.clone());
    match user {
        Some(user) => json_response(StatusCode::OK, &Value::Object(user.claims())),
        None => {
            let mut resp = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "unknown or expired access token",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Expiring;

    #[test]
    fn expired_entries_go_once_the_map_has_doubled_and_live_ones_stay() {
        let mut map = Expiring::default();
        // Even numbers "expired".
        for i in 0..1024 {
            map.insert(i.to_string(), i, |v| v % 2 == 1);
        }
        assert_eq!(map.entries.len(), 1024, "no sweep below the threshold");
        map.insert("new".into(), 1, |v| v % 2 == 1);
        assert_eq!(
            map.entries.len(),
            513,
            "the expired half went, the new one came"
        );
        assert!(map.get("7").is_some() && map.get("8").is_none());
        assert_eq!(
            map.sweep_at, 1024,
            "the next sweep waits for the map to double"
        );
        assert_eq!(map.remove("7"), Some(7));
    }
}
