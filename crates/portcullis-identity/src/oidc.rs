//! One OpenID Connect provider: discovery, the authorization request, the code exchange,
//! ID token verification and userinfo.
//!
//! OpenID Connect Core 1.0 §3.1.3.7 lists the ID token checks implemented in
//! [`OidcProvider::verify_id_token`]: the issuer must match exactly, the audience must
//! contain our client id (and `azp` must name us when there are several audiences), the
//! signature must verify with the provider's key under an algorithm we allow, `exp` must
//! be in the future, and the `nonce` must be the one we sent. `alg: none` and symmetric
//! algorithms are never accepted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_config::{
    EntraConfig, ExposeSecret, Flow, ProviderConfig, ProviderKind, ResponseMode,
};
use portcullis_core::{Identity, constant_time_eq};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::claims::{IdTokenClaims, identity_from_claims};
use crate::discovery::{ProviderMetadata, TENANT_TEMPLATE, error_chain};
use crate::jwks::JwksCache;
use crate::{IdentityError, pkce};

mod introspect;
mod logout;

pub use introspect::Introspected;
pub use logout::{LOGOUT_EVENT, LogoutToken, read_unsigned_logout_token};

/// A bearer token an API client sent, verified: who it vouches for and when it was
/// issued (to refuse tokens issued before their user's sessions were revoked).
#[derive(Debug, Clone)]
pub struct VerifiedBearer {
    pub identity: Identity,
    /// `iat`, when the token says.
    pub issued_at: Option<u64>,
    /// `exp`, when the token says.
    pub expires_at: Option<u64>,
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 60;

/// Signature algorithms accepted when the provider publishes them: asymmetric only.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Authorization request parameters that configuration may not override.
const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
];

/// How soon a failed discovery may be retried on demand.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// How long a provider's keys are kept before a routine refetch drops retired ones.
const JWKS_REFRESH: Duration = Duration::from_secs(3600);

/// What a started login must remember until the callback.
#[derive(Clone)]
pub struct AuthorizationRequest {
    /// Where to send the browser.
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

struct Discovered {
    metadata: ProviderMetadata,
    jwks: JwksCache,
    algorithms: Vec<Algorithm>,
}

pub struct OidcProvider {
    config: ProviderConfig,
    discovery_url: Url,
    /// Set for Microsoft Entra: tenant checks and group overage.
    entra: Option<EntraConfig>,
    http: reqwest::Client,
    discovered: ArcSwapOption<Discovered>,
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    jwks_min_refetch: Duration,
}

impl OidcProvider {
    /// An OpenID Connect provider; `None` for a kind that is not OpenID Connect (GitHub).
    pub fn new(config: ProviderConfig, http: reqwest::Client) -> Option<Self> {
        let (discovery_url, entra) = match &config.kind {
            ProviderKind::Oidc { discovery_url } => (discovery_url.clone(), None),
            ProviderKind::Entra(entra) => (entra.discovery_url.clone(), Some(entra.clone())),
            ProviderKind::GitHub(_) => return None,
        };
        for (name, _) in &config.auth_url_params {
            if RESERVED_PARAMS.contains(&name.as_str()) {
                tracing::warn!(provider = %config.name, param = %name, "auth_url_params cannot override a protocol parameter; ignoring it");
            }
        }
        Some(OidcProvider {
            discovery_url,
            entra,
            config,
            http,
            discovered: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            jwks_min_refetch: Duration::from_secs(10),
        })
    }

    /// Sets how often an unknown `kid` may trigger a key refetch (tests shorten it).
    pub fn with_jwks_min_refetch(mut self, every: Duration) -> Self {
        self.jwks_min_refetch = every;
        self
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Whether the discovery document and keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.discovered.load().is_some()
    }

    /// The provider's metadata, fetching it if it is not loaded yet.
    pub async fn metadata(&self) -> Result<ProviderMetadata, IdentityError> {
        Ok(self.discovered().await?.metadata.clone())
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, IdentityError> {
        if let Some(d) = self.discovered.load_full() {
            return Ok(d);
        }
        let mut last = self.last_attempt.lock().await;
        if let Some(d) = self.discovered.load_full() {
            return Ok(d);
        }
        if last.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY) {
            return Err(IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: "discovery failed moments ago; retrying shortly".into(),
            });
        }
        *last = Some(Instant::now());
        let discovered = Arc::new(self.discover().await?);
        self.discovered.store(Some(discovered.clone()));
        tracing::info!(provider = %self.config.name, issuer = %discovered.metadata.issuer, "identity provider metadata loaded");
        Ok(discovered)
    }

    async fn discover(&self) -> Result<Discovered, IdentityError> {
        let multi_tenant = self.entra.as_ref().is_some_and(EntraConfig::multi_tenant);
        let metadata = ProviderMetadata::fetch(
            &self.http,
            &self.config.name,
            &self.discovery_url,
            multi_tenant,
        )
        .await?;
        let published: Vec<Algorithm> = metadata
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .filter(|a| ASYMMETRIC.contains(a))
            .collect();
        // OpenID Connect Discovery §3: RS256 is the default when none is published.
        let algorithms = if metadata.id_token_signing_alg_values_supported.is_empty() {
            vec![Algorithm::RS256]
        } else {
            published
        };
        if algorithms.is_empty() {
            return Err(IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: format!(
                    "the provider signs ID tokens only with {:?}, none of which Portcullis accepts (asymmetric algorithms only)",
                    metadata.id_token_signing_alg_values_supported
                ),
            });
        }
        let jwks = JwksCache::load(
            self.http.clone(),
            &self.config.name,
            &metadata.jwks_uri,
            self.jwks_min_refetch,
        )
        .await?;
        Ok(Discovered {
            metadata,
            jwks,
            algorithms,
        })
    }

    /// Keeps the provider usable in the background: retries discovery with backoff until
    /// it succeeds (so Portcullis starts even while the provider is down), then refreshes
    /// the keys periodically.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let provider = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(p) = provider.upgrade() else { return };
                match p.discovered().await {
                    Ok(d) => {
                        drop(p);
                        tokio::time::sleep(JWKS_REFRESH).await;
                        if let Err(e) = d.jwks.refresh().await {
                            tracing::warn!(error = %e, "periodic key refresh failed; keeping the previous keys");
                        }
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.config.name, error = %e, retry_in_secs = backoff.as_secs(), "identity provider not reachable yet");
                        drop(p);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    }

    /// Starts a code-flow login: fresh state, nonce and PKCE verifier, and the URL to send
    /// the browser to.
    pub async fn authorization_request(
        &self,
        redirect_uri: &str,
        step_up: Option<&crate::provider::StepUp>,
    ) -> Result<AuthorizationRequest, IdentityError> {
        let d = self.discovered().await?;
        let state = portcullis_core::random::token();
        let nonce = portcullis_core::random::token();
        let pkce_verifier = pkce::verifier();
        let mut url = Url::parse(&d.metadata.authorization_endpoint).map_err(|e| {
            IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: format!("authorization_endpoint is not a URL: {e}"),
            }
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.scope())
                .append_pair("state", &state)
                .append_pair("nonce", &nonce);
            match (self.config.flow, self.config.response_mode) {
                (Flow::Code, _) => {
                    q.append_pair("response_type", "code")
                        .append_pair("code_challenge", &pkce::challenge(&pkce_verifier))
                        .append_pair("code_challenge_method", "S256");
                }
                // OAuth 2.0 Form Post Response Mode: the answer is POSTed to the callback.
                (Flow::Implicit, ResponseMode::FormPost) => {
                    q.append_pair("response_type", "id_token")
                        .append_pair("response_mode", "form_post");
                }
                // The default for id_token: the answer in the redirect's fragment.
                (Flow::Implicit, ResponseMode::Fragment) => {
                    q.append_pair("response_type", "id_token")
                        .append_pair("response_mode", "fragment");
                }
            }
            for (name, value) in &self.config.auth_url_params {
                if !RESERVED_PARAMS.contains(&name.as_str()) {
                    q.append_pair(name, value);
                }
            }
            if let Some(step_up) = step_up {
                if let Some(max_age) = step_up.max_age {
                    q.append_pair("max_age", &max_age.to_string())
                        .append_pair("prompt", "login");
                }
                if !step_up.acr_values.is_empty() {
                    q.append_pair("acr_values", &step_up.acr_values.join(" "));
                }
            }
            // Google preselects accounts of the domain; the `hd` claim is still checked.
            if let Some(domain) = &self.config.hosted_domain
                && !self.config.auth_url_params.iter().any(|(n, _)| n == "hd")
            {
                q.append_pair("hd", domain);
            }
        }
        Ok(AuthorizationRequest {
            url: url.into(),
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// The requested scopes, space-separated, always including `openid`.
    fn scope(&self) -> String {
        let mut scopes: Vec<&str> = self.config.scopes.iter().map(String::as_str).collect();
        if !scopes.contains(&"openid") {
            scopes.insert(0, "openid");
        }
        scopes.join(" ")
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5).
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, IdentityError> {
        self.token_request(vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ])
        .await
    }

    /// Uses a refresh token (RFC 6749 §6). A refusal (`invalid_grant`: the token was
    /// revoked, or the user disabled) is a [`IdentityError::TokenExchange`] with
    /// `client_fault` set.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, IdentityError> {
        let tokens = self
            .token_request(vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await?;
        // OpenID Connect Core §12.2: an ID token in the answer must be verifiable, with
        // no nonce.
        if let Some(id_token) = tokens.id_token.as_deref() {
            self.verify_id_token(id_token, None).await?;
        }
        Ok(tokens)
    }

    /// A POST to one of the provider's endpoints, authenticated as this client the way
    /// the provider's token endpoint accepts (credentials added to `form` or a header).
    fn client_authenticated<'f>(
        &'f self,
        d: &Discovered,
        endpoint: &str,
        form: &mut Vec<(&'f str, &'f str)>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(endpoint)
            .header("accept", "application/json");
        let methods = &d.metadata.token_endpoint_auth_methods_supported;
        match &self.config.client_secret {
            // RFC 6749 §2.3.1: Basic is the default every server must support; the id
            // and secret are form-encoded before base64.
            Some(secret)
                if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") =>
            {
                let user: String =
                    form_urlencoded::byte_serialize(self.config.client_id.as_bytes()).collect();
                let pass: String =
                    form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect();
                request = request.header(
                    "authorization",
                    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))),
                );
            }
            Some(secret) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        request
    }

    async fn token_request(&self, form: Vec<(&str, &str)>) -> Result<TokenResponse, IdentityError> {
        // Shortened to this call, so the client's credentials can join it.
        let mut form: Vec<(&str, &str)> = form;
        let d = self.discovered().await?;
        let Some(endpoint) = d.metadata.token_endpoint.as_deref() else {
            return Err(IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: "the provider publishes no token_endpoint".into(),
            });
        };
        let request = self.client_authenticated(&d, endpoint, &mut form);
        let response = crate::http::send("idp.token", request.form(&form))
            .await
            .map_err(|e| IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: format!("token endpoint unreachable: {}", error_chain(&e)),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| IdentityError::ProviderUnavailable {
                provider: self.config.name.clone(),
                reason: format!("token endpoint answer cut off: {e}"),
            })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<OAuthErrorBody>(&body) {
                Ok(err) => IdentityError::TokenExchange {
                    client_fault: err.error == "invalid_grant",
                    error: err.error,
                    description: err.error_description,
                },
                Err(_) => IdentityError::TokenExchange {
                    error: format!("HTTP {status}"),
                    description: None,
                    client_fault: false,
                },
            });
        }
        serde_json::from_slice(&body).map_err(|e| IdentityError::TokenExchange {
            error: "invalid token response".into(),
            description: Some(e.to_string()),
            client_fault: false,
        })
    }

    /// Verifies an ID token; `expected_nonce` is required for tokens from a login.
    pub async fn verify_id_token(
        &self,
        token: &str,
        expected_nonce: Option<&str>,
    ) -> Result<IdTokenClaims, IdentityError> {
        let audience = std::slice::from_ref(&self.config.client_id);
        self.verify_jwt(token, audience, expected_nonce, true).await
    }

    /// The issuer this provider's tokens carry (a template for Entra multi-tenant), once
    /// discovery has loaded.
    pub fn issuer(&self) -> Option<String> {
        self.discovered
            .load()
            .as_ref()
            .map(|d| d.metadata.issuer.clone())
    }

    /// Whether a token claiming `iss` could come from this provider.
    pub fn issued(&self, iss: &str) -> bool {
        let Some(issuer) = self.issuer() else {
            return false;
        };
        match issuer.split_once(TENANT_TEMPLATE) {
            Some((head, tail)) => iss.starts_with(head) && iss.ends_with(tail),
            None => iss == issuer,
        }
    }

    /// Verifies a bearer token sent by an API client or CLI: a JWT signed by this
    /// provider for one of the configured audiences, checked exactly like an ID token
    /// (signature, issuer, expiry, tenant and domain rules) except for the nonce, and
    /// turned into an identity by the same claim mapping.
    pub async fn verify_bearer(&self, token: &str) -> Result<VerifiedBearer, IdentityError> {
        let claims = self
            .verify_jwt(token, &self.config.audiences, None, false)
            .await?;
        Ok(VerifiedBearer {
            identity: identity_from_claims(
                &self.config.name,
                &claims.sub,
                &claims.other,
                &self.config.claims,
            ),
            issued_at: claims.iat,
            expires_at: Some(claims.exp),
        })
    }

    async fn verify_jwt(
        &self,
        token: &str,
        audiences: &[String],
        expected_nonce: Option<&str>,
        id_token: bool,
    ) -> Result<IdTokenClaims, IdentityError> {
        let d = self.discovered().await?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::invalid(format!("malformed token header: {e}")))?;
        if !d.algorithms.contains(&header.alg) {
            return Err(IdentityError::invalid(format!(
                "algorithm {:?} is not allowed for this provider",
                header.alg
            )));
        }
        let key = d.jwks.key_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        let issuer_template = d.metadata.issuer.contains(TENANT_TEMPLATE);
        if !issuer_template {
            validation.set_issuer(&[&d.metadata.issuer]);
        }
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation)
            .map_err(|e| IdentityError::invalid(describe_jwt_error(&e)))?
            .claims;
        // OpenID Connect Core §3.1.3.7 (ID tokens only): with several audiences, `azp`
        // must name this client. An access token's `azp` is the client that requested
        // it, often another one (a CLI), so it is not checked for bearer tokens.
        if id_token {
            match claims.azp.as_deref() {
                Some(azp) if azp != self.config.client_id => {
                    return Err(IdentityError::invalid("azp names another client"));
                }
                None if claims.aud.as_slice().len() > 1 => {
                    return Err(IdentityError::invalid(
                        "several audiences but no azp naming this client",
                    ));
                }
                _ => {}
            }
        }
        let now = portcullis_core::time::unix_now();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(IdentityError::invalid(
                "issued in the future (check clocks)",
            ));
        }
        if claims.sub.is_empty() {
            return Err(IdentityError::invalid("empty subject"));
        }
        let not_allowed = |reason: String| {
            let who = ["email", "preferred_username", "upn"]
                .iter()
                .find_map(|c| claims.other.get(*c).and_then(Value::as_str))
                .unwrap_or(&claims.sub)
                .to_string();
            IdentityError::NotAllowed { who, reason }
        };
        if let Some(entra) = &self.entra {
            check_tenant(entra, &d.metadata.issuer, &claims).map_err(not_allowed)?;
        } else if issuer_template {
            return Err(IdentityError::invalid("the issuer is a template"));
        }
        if let Some(domain) = &self.config.hosted_domain {
            match claims.other.get("hd").and_then(Value::as_str) {
                Some(hd) if hd.eq_ignore_ascii_case(domain) => {}
                Some(hd) => {
                    return Err(not_allowed(format!(
                        "the account belongs to the Google domain {hd}, not {domain}"
                    )));
                }
                None => {
                    return Err(not_allowed(format!(
                        "the account is not a {domain} Google Workspace account"
                    )));
                }
            }
        }
        if let Some(expected) = expected_nonce {
            match claims.nonce.as_deref() {
                Some(nonce) if constant_time_eq(nonce.as_bytes(), expected.as_bytes()) => {}
                Some(_) => return Err(IdentityError::invalid("nonce does not match this login")),
                None => return Err(IdentityError::invalid("nonce missing")),
            }
        }
        Ok(claims)
    }

    /// Calls the userinfo endpoint (OpenID Connect Core §5.3).
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, IdentityError> {
        let d = self.discovered().await?;
        let Some(endpoint) = d.metadata.userinfo_endpoint.as_deref() else {
            return Err(IdentityError::UserInfo(
                "the provider publishes no userinfo_endpoint".into(),
            ));
        };
        let response = crate::http::send(
            "idp.userinfo",
            self.http
                .get(endpoint)
                .bearer_auth(access_token)
                .header("accept", "application/json"),
        )
        .await
        .map_err(|e| {
            IdentityError::UserInfo(format!("userinfo unreachable: {}", error_chain(&e)))
        })?;
        if !response.status().is_success() {
            return Err(IdentityError::UserInfo(format!(
                "userinfo answered {}",
                response.status()
            )));
        }
        response
            .json::<Map<String, Value>>()
            .await
            .map_err(|e| IdentityError::UserInfo(format!("userinfo is not a JSON object: {e}")))
    }

    /// The identity an implicit-flow answer vouches for: the ID token, verified with the
    /// login's nonce (mandatory). There is no access token, so no userinfo and no Graph.
    pub async fn implicit_identity(
        &self,
        id_token: &str,
        expected_nonce: &str,
    ) -> Result<Identity, IdentityError> {
        if expected_nonce.is_empty() {
            return Err(IdentityError::invalid("no nonce was sent with this login"));
        }
        let claims = self.verify_id_token(id_token, Some(expected_nonce)).await?;
        let mut identity = identity_from_claims(
            &self.config.name,
            &claims.sub,
            &claims.other,
            &self.config.claims,
        );
        if crate::graph::has_group_overage(&claims.other, &self.config.claims.groups) {
            tracing::warn!(provider = %self.config.name, user = %identity.display(), "group overage in an implicit-flow login: without an access token the groups cannot be read from Microsoft Graph, so the user has no groups (use the code flow)");
            identity.groups.clear();
        }
        Ok(identity)
    }

    /// The identity a finished login vouches for: the verified ID token's claims,
    /// completed from userinfo when the token carries no email.
    pub async fn identity(
        &self,
        tokens: &TokenResponse,
        expected_nonce: &str,
    ) -> Result<Identity, IdentityError> {
        let Some(id_token) = tokens.id_token.as_deref() else {
            return Err(IdentityError::invalid(
                "the token response has no id_token (is the openid scope requested?)",
            ));
        };
        let claims = self.verify_id_token(id_token, Some(expected_nonce)).await?;
        let mut merged = claims.other.clone();
        // Userinfo only when the token carries none of the claims the email comes from
        // (most providers put scope claims there; oidc-provider by default only there).
        let has_email = self
            .config
            .claims
            .email
            .iter()
            .any(|c| merged.contains_key(c));
        if !has_email {
            let info = self.userinfo(&tokens.access_token).await?;
            // §5.3.2: the userinfo `sub` MUST match the ID token's.
            if info.get("sub").and_then(Value::as_str) != Some(claims.sub.as_str()) {
                return Err(IdentityError::UserInfo(
                    "userinfo describes a different subject than the ID token".into(),
                ));
            }
            for (k, v) in info {
                merged.entry(k).or_insert(v);
            }
        }
        let mut identity =
            identity_from_claims(&self.config.name, &claims.sub, &merged, &self.config.claims);
        if let Some(entra) = &self.entra
            && crate::graph::has_group_overage(&merged, &self.config.claims.groups)
        {
            match crate::graph::transitive_groups(
                &self.http,
                &entra.graph_url,
                &tokens.access_token,
            )
            .await
            {
                Ok(groups) => {
                    tracing::info!(provider = %self.config.name, groups = groups.len(), "group overage: groups read from Microsoft Graph");
                    identity.groups = groups;
                }
                Err(reason) => {
                    // Never guess: the user gets no groups, so a group rule refuses them.
                    tracing::warn!(provider = %self.config.name, user = %identity.display(), "group overage: cannot read the groups from Microsoft Graph, so the user has no groups: {reason}");
                    identity.groups.clear();
                }
            }
        }
        Ok(identity)
    }
}

/// Entra: the token must come from the configured tenant, or (multi-tenant) from one of
/// the allowed tenants, with the issuer that tenant's template names.
fn check_tenant(entra: &EntraConfig, issuer: &str, claims: &IdTokenClaims) -> Result<(), String> {
    let tid = claims
        .other
        .get("tid")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let needs_tid = entra.multi_tenant() || is_tenant_id(&entra.tenant);
    let Some(tid) = tid else {
        // With a tenant named by domain (or only a discovery URL), the exact issuer check
        // already binds the token to that tenant.
        return if needs_tid {
            Err("the token names no Microsoft tenant (tid)".into())
        } else {
            Ok(())
        };
    };
    if entra.multi_tenant() {
        if !entra.allowed_tenants.contains(&tid) {
            return Err(format!(
                "the Microsoft tenant {tid} is not an allowed tenant"
            ));
        }
    } else if is_tenant_id(&entra.tenant) && !entra.tenant.eq_ignore_ascii_case(&tid) {
        return Err(format!(
            "the account belongs to the Microsoft tenant {tid}, not the configured one"
        ));
    }
    if issuer.contains(TENANT_TEMPLATE) && claims.iss != issuer.replace(TENANT_TEMPLATE, &tid) {
        return Err("the token's issuer does not belong to its tenant".into());
    }
    Ok(())
}

/// A tenant given as its id (a GUID) rather than a domain name.
fn is_tenant_id(tenant: &str) -> bool {
    tenant.len() == 36
        && tenant.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "issued by another issuer".into(),
        ErrorKind::InvalidAudience => "issued for another client (aud)".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("required claim {c} missing"),
        ErrorKind::InvalidAlgorithm => "algorithm does not match the key".into(),
        other => format!("{other:?}"),
    }
}
