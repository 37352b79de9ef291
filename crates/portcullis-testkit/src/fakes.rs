//! In-process fakes of APIs that cannot be reached from here: GitHub (OAuth endpoints and
//! the REST API, paged exactly as GitHub pages) and Microsoft Graph (`transitiveMemberOf`,
//! paged by `@odata.nextLink`). They answer the shapes the real services document, check
//! what a real one would check (client secret, PKCE, bearer token), and record every
//! request so a test can assert what was asked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use url::Url;

/// One request as a fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn query(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn form(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// A loopback HTTP server answering with `handler`, keeping every request.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(handler: Handler) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                url: Url::parse(&format!("http://{addr}{}", parts.uri)).unwrap(),
                                headers: parts.headers,
                                body,
                            };
                            let resp = handler(&seen);
                            log.lock().unwrap().push(seen);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeServer { addr, seen, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The paths requested, in order.
    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.url.path().to_string())
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.url.path() == path)
            .cloned()
            .collect()
    }
}

fn json_response(status: StatusCode, value: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// GitHub

/// A GitHub account as the fake knows it.
#[derive(Debug, Clone, Default)]
pub struct GitHubUser {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// The public profile email (`null` when the user keeps it private).
    pub email: Option<String>,
    /// `/user/emails`: (address, primary, verified).
    pub emails: Vec<(String, bool, bool)>,
    pub orgs: Vec<String>,
    /// (org, team slug).
    pub teams: Vec<(String, String)>,
    /// The token lacks the user:email scope: `/user/emails` answers 404, as GitHub does.
    pub no_email_scope: bool,
}

#[derive(Default)]
struct GitHubState {
    /// Who signs in at the next authorization request.
    next: Option<GitHubUser>,
    /// code -> (user, PKCE challenge, redirect_uri)
    codes: HashMap<String, (GitHubUser, String, String)>,
    tokens: HashMap<String, GitHubUser>,
}

/// GitHub Enterprise-shaped: the web endpoints at the root, the API under `/api/v3`.
/// Lists are served two items per page, whatever `per_page` asks, so paging is exercised.
pub struct FakeGitHub {
    pub server: FakeServer,
    state: Arc<Mutex<GitHubState>>,
}

const GITHUB_PAGE: usize = 2;

impl FakeGitHub {
    pub async fn start(client_id: &'static str, client_secret: &'static str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(GitHubState::default()));
        let s = state.clone();
        let server = FakeServer::start(Arc::new(move |req: &Seen| {
            github_answer(&s, req, client_id, client_secret)
        }))
        .await;
        FakeGitHub { server, state }
    }

    /// The user the next login signs in as.
    pub fn sign_in_as(&self, user: GitHubUser) {
        self.state.lock().unwrap().next = Some(user);
    }

    pub fn url(&self) -> String {
        self.server.url("")
    }
}

fn github_answer(
    state: &Mutex<GitHubState>,
    req: &Seen,
    client_id: &str,
    client_secret: &str,
) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap();
    match (req.method.clone(), req.url.path()) {
        (Method::GET, "/login/oauth/authorize") => {
            if req.query("client_id").as_deref() != Some(client_id) {
                return json_response(StatusCode::NOT_FOUND, json!({"error": "unknown client"}));
            }
            let (Some(redirect), Some(state_param), Some(challenge)) = (
                req.query("redirect_uri"),
                req.query("state"),
                req.query("code_challenge"),
            ) else {
                return json_response(StatusCode::BAD_REQUEST, json!({"error": "incomplete"}));
            };
            // Nobody signed in at GitHub: its sign-in page first, as github.com does
            // (it checks the redirect URL only after that).
            let Some(user) = st.next.clone() else {
                let mut login = req.url.clone();
                login.set_path("/login");
                login.set_query(Some("return_to=%2Flogin%2Foauth%2Fauthorize"));
                return Response::builder()
                    .status(StatusCode::FOUND)
                    .header("location", login.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            };
            let code = format!("code-{}", st.codes.len() + 1);
            st.codes
                .insert(code.clone(), (user, challenge, redirect.clone()));
            let mut back = Url::parse(&redirect).unwrap();
            back.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state_param);
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", back.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        (Method::POST, "/login/oauth/access_token") => {
            // GitHub answers token errors with 200 and an `error` field.
            let refuse = |error: &str| {
                json_response(
                    StatusCode::OK,
                    json!({"error": error, "error_description": "refused by the fake"}),
                )
            };
            if req.form("client_id").as_deref() != Some(client_id)
                || req.form("client_secret").as_deref() != Some(client_secret)
            {
                return refuse("incorrect_client_credentials");
            }
            let Some((user, challenge, redirect)) =
                req.form("code").and_then(|c| st.codes.remove(&c))
            else {
                return refuse("bad_verification_code");
            };
            let verifier = req.form("code_verifier").unwrap_or_default();
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
            if URL_SAFE_NO_PAD.encode(digest.as_ref()) != challenge {
                return refuse("bad_verification_code");
            }
            if req.form("redirect_uri").as_deref() != Some(redirect.as_str()) {
                return refuse("redirect_uri_mismatch");
            }
            let token = format!("gho_fake{}", st.tokens.len() + 1);
            st.tokens.insert(token.clone(), user);
            json_response(
                StatusCode::OK,
                json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"}),
            )
        }
        (Method::GET, path) if path.starts_with("/api/v3/") => {
            let Some(user) = req.bearer().and_then(|t| st.tokens.get(t)).cloned() else {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"message": "Bad credentials"}),
                );
            };
            let items: Vec<Value> = match &path["/api/v3".len()..] {
                "/user" => {
                    return json_response(
                        StatusCode::OK,
                        json!({"id": user.id, "login": user.login, "name": user.name, "email": user.email}),
                    );
                }
                "/user/emails" if user.no_email_scope => {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
                    );
                }
                "/user/emails" => user
                    .emails
                    .iter()
                    .map(|(e, p, v)| json!({"email": e, "primary": p, "verified": v, "visibility": null}))
                    .collect(),
                "/user/orgs" => user.orgs.iter().map(|o| json!({"login": o, "id": 1})).collect(),
                "/user/teams" => user
                    .teams
                    .iter()
                    .map(|(o, t)| json!({"slug": t, "name": t, "organization": {"login": o}}))
                    .collect(),
                _ => return json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            };
            paged(req, items)
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}

/// One page of `items` with GitHub's `Link` header.
fn paged(req: &Seen, items: Vec<Value>) -> Response<Full<Bytes>> {
    let page: usize = req.query("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let pages = items.len().div_ceil(GITHUB_PAGE).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * GITHUB_PAGE)
        .take(GITHUB_PAGE)
        .collect();
    let link_to = |n: usize| {
        let mut u = req.url.clone();
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("page", &n.to_string());
        u.to_string()
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(format!("<{}>; rel=\"next\"", link_to(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", link_to(pages)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", link_to(page - 1)));
    }
    let mut resp = json_response(StatusCode::OK, Value::Array(slice));
    if !links.is_empty() {
        resp.headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    resp
}

// ---------------------------------------------------------------------------------------
// Microsoft Graph

/// `GET /v1.0/me/transitiveMemberOf/microsoft.graph.group`, two pages; or, when
/// `failing`, 503 for everything.
pub struct FakeGraph {
    pub server: FakeServer,
}

impl FakeGraph {
    pub async fn start(groups: Vec<&'static str>, failing: bool) -> FakeGraph {
        let server = FakeServer::start(Arc::new(move |req: &Seen| {
            if failing {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": {"code": "serviceNotAvailable"}}),
                );
            }
            if req.bearer().is_none_or(str::is_empty) {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": {"code": "InvalidAuthenticationToken"}}),
                );
            }
            if req.url.path() != "/v1.0/me/transitiveMemberOf/microsoft.graph.group" {
                return json_response(StatusCode::NOT_FOUND, json!({"error": {"code": "Request_ResourceNotFound"}}));
            }
            let half = groups.len() / 2;
            let (items, next) = match req.query("$skiptoken") {
                None => {
                    let mut next = req.url.clone();
                    next.query_pairs_mut().append_pair("$skiptoken", "page2");
                    (&groups[..half], Some(next.to_string()))
                }
                Some(_) => (&groups[half..], None),
            };
            let value: Vec<Value> = items
                .iter()
                .map(|id| json!({"@odata.type": "#microsoft.graph.group", "id": id}))
                .collect();
            let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects", "value": value});
            if let Some(next) = next {
                body["@odata.nextLink"] = json!(next);
            }
            json_response(StatusCode::OK, body)
        }))
        .await;
        FakeGraph { server }
    }

    pub fn url(&self) -> String {
        self.server.url("")
    }
}

/// Microsoft Entra's answers to what `portcullis check` probes, which the OpenID provider
/// standing in for Entra elsewhere does not give: its discovery document (keys from
/// `jwks_uri`, a real provider's), the token endpoint's `AADSTS7000215` for a wrong
/// secret, `AADSTS700016` for an unknown application and `AADSTS9002313`
/// (`invalid_grant`) for a code it never issued, and the authorization endpoint's
/// `AADSTS50011` page for an unregistered redirect URL.
pub struct FakeEntra {
    pub server: FakeServer,
}

impl FakeEntra {
    pub async fn start(
        client_id: &'static str,
        client_secret: &'static str,
        redirect_uri: String,
        jwks_uri: String,
    ) -> FakeEntra {
        let issuer = Arc::new(Mutex::new(String::new()));
        let own = issuer.clone();
        let server = FakeServer::start(Arc::new(move |req: &Seen| {
            let base = own.lock().unwrap().clone();
            let html = |status: StatusCode, text: String| {
                Response::builder()
                    .status(status)
                    .header("content-type", "text/html; charset=utf-8")
                    .body(Full::new(Bytes::from(format!("<html><body><div>{text}</div></body></html>"))))
                    .unwrap()
            };
            match req.url.path() {
                "/.well-known/openid-configuration" => json_response(
                    StatusCode::OK,
                    json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                        "jwks_uri": jwks_uri,
                        "response_types_supported": ["code", "id_token"],
                        "subject_types_supported": ["pairwise"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                    }),
                ),
                "/oauth2/v2.0/authorize" => {
                    if req.query("client_id").as_deref() != Some(client_id) {
                        return html(StatusCode::BAD_REQUEST, "AADSTS700016: Application with identifier was not found in the directory.".into());
                    }
                    if req.query("redirect_uri").as_deref() != Some(redirect_uri.as_str()) {
                        return html(StatusCode::BAD_REQUEST, format!(
                            "AADSTS50011: The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{client_id}'.",
                            req.query("redirect_uri").unwrap_or_default()
                        ));
                    }
                    html(StatusCode::OK, "Sign in to your account".into())
                }
                "/oauth2/v2.0/token" => {
                    if req.form("client_id").as_deref() != Some(client_id) {
                        return json_response(StatusCode::BAD_REQUEST, json!({
                            "error": "unauthorized_client",
                            "error_description": "AADSTS700016: Application with identifier was not found in the directory.",
                        }));
                    }
                    if req.form("client_secret").as_deref() != Some(client_secret) {
                        return json_response(StatusCode::UNAUTHORIZED, json!({
                            "error": "invalid_client",
                            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                        }));
                    }
                    json_response(StatusCode::BAD_REQUEST, json!({
                        "error": "invalid_grant",
                        "error_description": "AADSTS9002313: Invalid request. Request is malformed or invalid.",
                    }))
                }
                _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
            }
        }))
        .await;
        *issuer.lock().unwrap() = server.url("");
        FakeEntra { server }
    }

    pub fn issuer(&self) -> String {
        self.server.url("")
    }
}
