//! Authenticate: who a request belongs to. A session cookie points into the session
//! store; an `Authorization: Bearer <JWT>` (when bearer tokens are on) is verified against
//! the provider that issued it, and an opaque bearer token is introspected (RFC 7662) at
//! the providers that publish an introspection endpoint, through a cache. A bearer
//! request never falls back to the cookie or to anonymous: a token that fails
//! verification is a 401. A bearer token of a user the provider has since disabled, or
//! issued before their sessions were revoked, is refused too (the store's marks).
//!
//! Sessions with a refresh token are refreshed here, before the access token expires: one
//! refresh per session at a time, claimed in the session store so that this holds across
//! replicas (concurrent requests wait for it and use its result); a refresh the provider
//! refuses ends the session. A provider that is down or slow ends no session and stalls
//! none for long: a request waits at most `REFRESH_PATIENCE` for it, then goes on with the
//! tokens it has, and no refresh is tried with that provider for `REFRESH_PAUSE`.

use portcullis_core::trace;
use std::sync::Arc;

use http::HeaderMap;
use portcullis_core::Identity;
use portcullis_identity::{
    IdentityError, Introspected, TokenResponse, VerifiedBearer, unverified_issuer,
};
use portcullis_policy::{Provisioning, Subject};
use portcullis_session::{
    DirectoryUser, SessionData, SessionId, SessionStore, SessionTokens, identity_keys,
};

use super::{App, Auth, session_id};
use crate::error::ProxyError;
use crate::introspection::{Answer, IntrospectionCache};
use crate::metrics::ProviderCall;

/// Who a request belongs to.
pub(super) enum Principal {
    /// A browser's session, and with the identity assertion on, the key its assertions
    /// are cached under (a keyed hash of its cookie, taken once, where the cookie is read).
    Session {
        data: Arc<SessionData>,
        assertion_key: Option<u64>,
    },
    /// An API client's verified bearer token.
    Bearer(Box<BearerUser>),
}

pub(super) struct BearerUser {
    pub identity: Identity,
    pub teams: Vec<String>,
    pub provisioning: Provisioning,
}

impl Principal {
    fn session(data: Arc<SessionData>) -> Self {
        Principal::Session {
            data,
            assertion_key: None,
        }
    }

    pub(super) fn identity(&self) -> &Identity {
        match self {
            Principal::Session { data: s, .. } => &s.identity,
            Principal::Bearer(b) => &b.identity,
        }
    }

    pub(super) fn teams(&self) -> &[String] {
        match self {
            Principal::Session { data: s, .. } => &s.teams,
            Principal::Bearer(b) => &b.teams,
        }
    }

    /// Sessions are revoked when the directory deactivates their user, so their status
    /// needs no lookup; a bearer token was looked up for this request.
    pub(super) fn provisioning(&self) -> Provisioning {
        match self {
            Principal::Session { .. } => Provisioning::NotChecked,
            Principal::Bearer(b) => b.provisioning,
        }
    }

    /// What the policy looks at.
    pub(super) fn subject(&self) -> Subject<'_> {
        Subject {
            identity: self.identity(),
            teams: self.teams(),
            provisioning: self.provisioning(),
        }
    }

    /// The provider's groups and the directory's teams, each once.
    pub(super) fn all_groups(&self) -> impl Iterator<Item = &str> + Clone {
        let identity = self.identity();
        let groups = identity.groups.iter().map(String::as_str);
        let teams = self
            .teams()
            .iter()
            .map(String::as_str)
            .filter(|t| !identity.groups.iter().any(|g| g == t));
        groups.chain(teams)
    }

    /// What the assertion cache files this principal's assertions under: its session's
    /// key, when a session is what admitted it.
    pub(super) fn assertion_key(&self) -> Option<u64> {
        match self {
            Principal::Session { assertion_key, .. } => *assertion_key,
            Principal::Bearer(_) => None,
        }
    }

    pub(super) fn tokens(&self) -> Option<&SessionTokens> {
        match self {
            Principal::Session { data: s, .. } => s.tokens.as_deref(),
            Principal::Bearer(_) => None,
        }
    }
}

/// How long a replica may hold the right to refresh a session.
const REFRESH_CLAIM: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a request waits for another replica's refresh.
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request waits for the provider to refresh its session's tokens; a slower
/// provider is given up on and the request goes on with the tokens it has (the refresh
/// runs ahead of their expiry).
const REFRESH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
/// After a provider failed or stalled a refresh, how long no refresh is tried with it, so
/// that every request of every session does not wait for it again.
const REFRESH_PAUSE: std::time::Duration = std::time::Duration::from_secs(15);

/// The bearer token of an `Authorization` header, if that is what it holds.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Loads the discovery of each provider that has not loaded it yet (just after start):
/// until then it knows no issuer, and a token or logout from it would be refused.
pub(super) async fn discover_all(auth: &Auth) {
    for provider in auth.providers.iter().filter_map(|p| p.as_oidc()) {
        if !provider.is_ready() {
            let _ = provider.metadata().await;
        }
    }
}

/// Keeps the tokens a session needs later.
pub(super) fn session_tokens(auth: &Auth, tokens: &TokenResponse) -> Option<Box<SessionTokens>> {
    let wanted = tokens.refresh_token.is_some()
        || auth.pass_access_token
        || auth.pass_id_token
        || auth.provider_logout;
    wanted.then(|| {
        Box::new(SessionTokens {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            id_token: tokens.id_token.clone(),
            expires_at: tokens
                .expires_in
                .map(|s| portcullis_core::time::unix_now().saturating_add(s)),
        })
    })
}

impl App {
    /// The principal behind the request, if any: its bearer token when bearer tokens are
    /// on and it sends one, else its session cookie.
    pub(super) async fn authenticate(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, ProxyError> {
        if auth.bearer_tokens
            && let Some(token) = bearer_token(headers)
        {
            // Boxed, as is the refresh below: the futures of the rarer paths (provider
            // calls) are large, and every request's future would carry their size,
            // copied at each await up the chain.
            return Box::pin(self.authenticate_bearer(auth, token))
                .await
                .map(Some);
        }
        let Some(id) = session_id(headers, &auth.session_cookie.name) else {
            return Ok(None);
        };
        let Some(session) = auth.sessions.load(&id).await? else {
            return Ok(None);
        };
        // The clock only for a session with tokens to refresh.
        let principal =
            if session.tokens.as_ref().is_some_and(|t| {
                t.refresh_due(auth.refresh_before, portcullis_core::time::unix_now())
            }) {
                Box::pin(self.refresh(auth, &id, session)).await?
            } else {
                Some(Principal::session(session))
            };
        Ok(principal.map(|p| self.keyed_for_assertions(p, &id)))
    }

    /// A session's principal with the key its identity assertions are cached under, when
    /// assertions are on: taken here, where the cookie was read, so that forwarding does
    /// not look through the `Cookie` line for it again.
    fn keyed_for_assertions(&self, principal: Principal, id: &SessionId) -> Principal {
        match (principal, &self.assertions) {
            (Principal::Session { data, .. }, Some(assertions)) => Principal::Session {
                data,
                assertion_key: Some(assertions.session_word(id.expose())),
            },
            (principal, _) => principal,
        }
    }

    async fn authenticate_bearer(&self, auth: &Auth, token: &str) -> Result<Principal, ProxyError> {
        let refuse = |reason: &str| ProxyError::BadBearer(reason.to_string());
        // A JWT is verified here; anything else is an opaque token its provider is asked
        // about.
        let verified = if token.bytes().filter(|b| *b == b'.').count() == 2 {
            self.verify_jwt_bearer(auth, token).await?
        } else {
            self.introspect_bearer(auth, token).await?
        };
        let identity = verified.identity;
        let (provisioning, directory, teams) = self.directory_view(&identity).await?;
        // What the provider said since (a disabled account, revoked sessions) holds for
        // tokens too: one read of the marks, for bearer requests only.
        let keys = identity_keys(
            &identity,
            directory
                .as_ref()
                .map(|d| (d.tenant.as_str(), d.id.as_str())),
        );
        let marks = auth.sessions.marks(&keys).await?;
        if marks.disabled {
            return Err(refuse("the account is disabled at the identity provider"));
        }
        if let Some(at) = marks.revoked_at
            && verified.issued_at.is_none_or(|iat| iat <= at)
        {
            return Err(refuse(
                "the token was issued before the user's sessions were revoked",
            ));
        }
        Ok(Principal::Bearer(Box::new(BearerUser {
            identity,
            teams,
            provisioning,
        })))
    }

    async fn verify_jwt_bearer(
        &self,
        auth: &Auth,
        token: &str,
    ) -> Result<VerifiedBearer, ProxyError> {
        let refuse = |reason: String| ProxyError::BadBearer(reason);
        let iss =
            unverified_issuer(token).ok_or_else(|| refuse("not a JWT with an issuer".into()))?;
        discover_all(auth).await;
        // Several configured clients may share one issuer (two apps at one Okta): the
        // token is accepted by the first whose audiences and rules it satisfies.
        let mut refusal = None;
        for provider in auth
            .providers
            .iter()
            .filter_map(|p| p.as_oidc())
            .filter(|p| p.issued(&iss))
        {
            match provider.verify_bearer(token).await {
                Ok(verified) => return Ok(verified),
                Err(e @ IdentityError::ProviderUnavailable { .. }) => {
                    return Err(ProxyError::Identity(e));
                }
                Err(other) => {
                    refusal.get_or_insert(other.to_string());
                }
            }
        }
        Err(refuse(refusal.unwrap_or_else(|| {
            "issued by no configured provider".into()
        })))
    }

    /// Asks the providers that introspect (RFC 7662) about an opaque token, in their
    /// configured order, through the cache. The first that vouches for it wins; a
    /// refusal or a failure to ask is a refusal, never a fallback.
    async fn introspect_bearer(
        &self,
        auth: &Auth,
        token: &str,
    ) -> Result<VerifiedBearer, ProxyError> {
        let mut refusal = None;
        for provider in auth.providers.iter().filter_map(|p| p.as_oidc()) {
            let url = match provider.introspection_endpoint().await {
                Ok(Some(url)) => url,
                Ok(None) => continue,
                Err(e) => {
                    refusal.get_or_insert(e.to_string());
                    continue;
                }
            };
            let key = IntrospectionCache::key(provider.name(), &url, token);
            let answer = match auth.introspection.get(&key) {
                Some(answer) => answer,
                None => {
                    let asked = std::time::Instant::now();
                    let introspected = provider.introspect(token).await;
                    self.metrics
                        .provider_call(provider.name(), ProviderCall::Introspection, asked);
                    let answer = match introspected {
                        Ok(Introspected::Active(verified)) => Answer::Active(verified),
                        Ok(Introspected::Refused(reason)) => Answer::Refused(reason),
                        Err(e) => {
                            tracing::warn!(provider = %provider.name(), error = %e, "token introspection failed: refusing the token");
                            refusal.get_or_insert(format!("introspection failed: {e}"));
                            continue;
                        }
                    };
                    auth.introspection.put(key, answer.clone());
                    answer
                }
            };
            match answer {
                Answer::Active(verified) => return Ok(*verified),
                Answer::Refused(reason) => {
                    refusal.get_or_insert(reason);
                }
            }
        }
        Err(ProxyError::BadBearer(refusal.unwrap_or_else(|| {
            "not a JWT, and no provider introspects tokens".into()
        })))
    }

    /// What the directory says about a signing-in identity: its provisioning status, the
    /// directory user it is, and its teams.
    pub(super) async fn directory_view(
        &self,
        identity: &Identity,
    ) -> Result<(Provisioning, Option<DirectoryUser>, Vec<String>), ProxyError> {
        use crate::scim::Provisioned;
        let Some(scim) = &self.scim else {
            return Ok((Provisioning::NotChecked, None, Vec::new()));
        };
        Ok(match scim.at_login(identity).await {
            Err(e) => {
                tracing::error!(error = %e, "the SCIM directory is unavailable: refusing the sign-in");
                return Err(ProxyError::DirectoryUnavailable);
            }
            Ok(Provisioned::NotLinked) => (Provisioning::NotChecked, None, Vec::new()),
            Ok(Provisioned::Unknown { required }) => (
                if required {
                    Provisioning::Missing
                } else {
                    Provisioning::NotChecked
                },
                None,
                Vec::new(),
            ),
            Ok(Provisioned::Found { tenant, user }) => (
                if user.active {
                    Provisioning::Active
                } else {
                    Provisioning::Inactive
                },
                Some(DirectoryUser {
                    tenant,
                    id: user.id,
                }),
                user.groups,
            ),
        })
    }

    /// Refreshes a session whose access token is about to expire. Returns the session to
    /// use, or `None` when the provider refused (the session is ended).
    async fn refresh(
        &self,
        auth: &Auth,
        id: &SessionId,
        seen: Arc<SessionData>,
    ) -> Result<Option<Principal>, ProxyError> {
        // Another request may have refreshed (or ended) the session since this one read
        // it: use what it stored.
        let Some(current) = auth.sessions.load(id).await? else {
            return Ok(None);
        };
        if current.tokens != seen.tokens {
            return Ok(Some(Principal::session(current)));
        }
        if current
            .tokens
            .as_ref()
            .is_none_or(|t| t.refresh_token.is_none())
        {
            return Ok(Some(Principal::session(current)));
        }
        let Some(provider) = auth
            .providers
            .iter()
            .find(|p| p.name() == &*current.identity.provider)
        else {
            return Ok(Some(Principal::session(current)));
        };
        if auth.refresh_paused(provider.name()) {
            return Ok(Some(Principal::session(current)));
        }
        // Concurrent requests, here and on other replicas, share the session: the one
        // that claims it refreshes, the rest wait for the tokens it stores (a refresh
        // token used twice may revoke the whole grant).
        if !auth.sessions.claim_refresh(id, REFRESH_CLAIM).await? {
            return self.await_refresh(auth, id, current).await;
        }
        let result = self.refresh_claimed(auth, id, current, provider).await;
        if let Err(e) = auth.sessions.release_refresh(id).await {
            tracing::debug!(error = %e, "could not release the refresh claim; it lapses by itself");
        }
        result
    }

    /// Another request is refreshing the session: wait (briefly) for its new tokens.
    async fn await_refresh(
        &self,
        auth: &Auth,
        id: &SessionId,
        current: Arc<SessionData>,
    ) -> Result<Option<Principal>, ProxyError> {
        let deadline = std::time::Instant::now() + REFRESH_WAIT;
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            match auth.sessions.load(id).await? {
                None => return Ok(None),
                Some(now) if now.tokens != current.tokens => {
                    return Ok(Some(Principal::session(now)));
                }
                Some(_) => {}
            }
        }
        // The access token has not expired yet (the refresh runs ahead of it): go on.
        Ok(Some(Principal::session(current)))
    }

    /// Refreshes a session this replica holds the claim for.
    async fn refresh_claimed(
        &self,
        auth: &Auth,
        id: &SessionId,
        current: Arc<SessionData>,
        provider: &portcullis_identity::Provider,
    ) -> Result<Option<Principal>, ProxyError> {
        let Some(old) = current.tokens.clone() else {
            return Ok(Some(Principal::session(current)));
        };
        let Some(refresh_token) = old.refresh_token.as_deref() else {
            return Ok(Some(Principal::session(current)));
        };
        let who = current.identity.display();
        let asked = std::time::Instant::now();
        let refreshed = tokio::time::timeout(
            REFRESH_PATIENCE,
            trace::in_span(
                "token.refresh",
                trace::Kind::Internal,
                provider.refresh(refresh_token),
            ),
        )
        .await;
        let Ok(refreshed) = refreshed else {
            auth.pause_refresh(provider.name());
            tracing::warn!(user = %who, provider = %provider.name(), waited = ?REFRESH_PATIENCE, pause = ?REFRESH_PAUSE, "the provider did not refresh the session's tokens in time; keeping the session, and no refresh with this provider for a while");
            return Ok(Some(Principal::session(current)));
        };
        self.metrics
            .provider_call(provider.name(), ProviderCall::Refresh, asked);
        match refreshed {
            None => Ok(Some(Principal::session(current))),
            Some(Ok(tokens)) => {
                let mut data = (*current).clone();
                data.tokens = Some(Box::new(SessionTokens {
                    access_token: tokens.access_token,
                    // RFC 6749 §6: a new refresh token replaces the old, else it stays.
                    refresh_token: tokens.refresh_token.or(old.refresh_token.clone()),
                    id_token: tokens.id_token.or(old.id_token.clone()),
                    expires_at: tokens
                        .expires_in
                        .map(|s| portcullis_core::time::unix_now().saturating_add(s)),
                }));
                if !auth.sessions.update(id, data.clone()).await? {
                    return Ok(None);
                }
                tracing::debug!(user = %who, provider = %provider.name(), "session tokens refreshed");
                Ok(Some(Principal::session(Arc::new(data))))
            }
            Some(Err(IdentityError::TokenExchange {
                client_fault: true,
                error,
                ..
            })) => {
                tracing::warn!(user = %who, provider = %provider.name(), error = %error, "the provider refused to refresh the session's tokens: session ended");
                auth.sessions.delete(id).await?;
                Ok(None)
            }
            Some(Err(e)) => {
                // Unreachable or confused provider: not a refusal. Keep the session and
                // try again after a pause.
                auth.pause_refresh(provider.name());
                tracing::warn!(user = %who, provider = %provider.name(), error = %e, pause = ?REFRESH_PAUSE, "token refresh failed; keeping the session and retrying later");
                Ok(Some(Principal::session(current)))
            }
        }
    }
}

impl Auth {
    fn refresh_paused(&self, provider: &str) -> bool {
        let now = std::time::Instant::now();
        let mut paused = self
            .refresh_paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        paused.retain(|(_, until)| *until > now);
        paused.iter().any(|(name, _)| name == provider)
    }

    fn pause_refresh(&self, provider: &str) {
        let until = std::time::Instant::now() + REFRESH_PAUSE;
        let mut paused = self
            .refresh_paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        paused.retain(|(name, _)| name != provider);
        paused.push((provider.to_owned(), until));
    }
}
