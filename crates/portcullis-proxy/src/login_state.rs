//! The login-state cookie: what a started login must remember until the callback.
//!
//! The state, nonce, PKCE verifier, provider and return path are sealed (AES-256-GCM,
//! bound to the cookie's name) into a short-lived cookie scoped to the callback path. Each
//! login gets its own cookie, named after its state, so two tabs logging in at once do not
//! overwrite each other. The callback accepts a response only if its `state` names a
//! cookie that opens, holds that same state, and is younger than the login timeout: this
//! is what makes a forged or replayed callback fail (OAuth 2.0 Security BCP, RFC 9700
//! §2.1 and §4.7).

use std::time::Duration;

use http::HeaderMap;
use http::header;
use portcullis_core::constant_time_eq;
use portcullis_core::seal::Sealer;
use portcullis_session::cookie;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "portcullis_login_";
/// How many characters of the state name the cookie.
const NAME_CHARS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginState {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    #[serde(rename = "p")]
    pub provider: String,
    #[serde(rename = "r")]
    pub return_to: String,
    /// Unix seconds.
    #[serde(rename = "t")]
    pub issued_at: u64,
    /// A step-up login: the provider must have authenticated the user within this many
    /// seconds, and (when listed) with one of these `acr` values.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginStateError {
    /// The `state` parameter is missing or not one Portcullis could have minted.
    BadState,
    /// No cookie for this state: started in another browser, or already completed.
    Missing,
    /// The cookie does not open or does not match the state: forged or tampered.
    Invalid,
    Expired,
}

impl LoginStateError {
    pub(crate) fn explain(&self) -> &'static str {
        match self {
            LoginStateError::BadState => "The sign-in response carries no valid state.",
            LoginStateError::Missing => {
                "This sign-in was not started in this browser, or it was already completed."
            }
            LoginStateError::Invalid => {
                "The sign-in response does not match the sign-in this browser started."
            }
            LoginStateError::Expired => "The sign-in took too long and expired.",
        }
    }
}

pub(crate) struct LoginCookies {
    sealer: Sealer,
    secure: bool,
    path: String,
    ttl: Duration,
}

fn well_formed_state(state: &str) -> bool {
    state.len() == 43
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cookie_name(state: &str) -> String {
    format!("{PREFIX}{}", &state[..NAME_CHARS])
}

/// Whether a cookie name is one of ours (so it is never forwarded upstream).
pub(crate) fn is_login_cookie(name: &[u8]) -> bool {
    name.starts_with(PREFIX.as_bytes())
}

impl LoginCookies {
    /// `secrets`: the current cookie secret first (it seals), then earlier ones (still
    /// opened, so a login in flight survives a secret rotation).
    pub(crate) fn new(secrets: &[&[u8]], secure: bool, callback_path: &str, ttl: Duration) -> Self {
        LoginCookies {
            sealer: Sealer::new(secrets, "portcullis login state v1"),
            secure,
            path: callback_path.to_string(),
            ttl,
        }
    }

    /// The `Set-Cookie` value that stores `login`. `cross_site_post`: the provider will
    /// POST the answer (`response_mode=form_post`), a cross-site request on which
    /// browsers send only `SameSite=None` cookies, which must be `Secure`; on plain http
    /// (development, where provider and app are usually the same site) it stays `Lax`.
    pub(crate) fn set(&self, login: &LoginState, cross_site_post: bool) -> String {
        let name = cookie_name(&login.state);
        let json = serde_json::to_vec(login).expect("login state serializes");
        let value = self.sealer.seal(name.as_bytes(), &json);
        let same_site = if cross_site_post && self.secure {
            "None"
        } else {
            "Lax"
        };
        format!(
            "{name}={value}; Path={}; Max-Age={}; HttpOnly; SameSite={same_site}{}",
            self.path,
            self.ttl.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the cookie of `state`, if `state` is well formed.
    pub(crate) fn clear(&self, state: &str) -> Option<String> {
        well_formed_state(state).then(|| {
            format!(
                "{}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax{}",
                cookie_name(state),
                self.path,
                if self.secure { "; Secure" } else { "" }
            )
        })
    }

    /// Whether the request carries a login cookie that opens: only a browser that started
    /// a login can have one, so the callback reads a posted body only then.
    pub(crate) fn any_open(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| cookie::pairs(v.as_bytes()))
            .filter(|(name, _)| name.starts_with(PREFIX.as_bytes()))
            .take(8)
            .any(|(name, value)| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| self.sealer.open(name, v))
                    .is_some()
            })
    }

    /// The login that `state` belongs to, checked as described in the module docs.
    pub(crate) fn take(
        &self,
        headers: &HeaderMap,
        state: &str,
    ) -> Result<LoginState, LoginStateError> {
        if !well_formed_state(state) {
            return Err(LoginStateError::BadState);
        }
        let name = cookie_name(state);
        let value = cookie::find(
            headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
            &name,
        )
        .ok_or(LoginStateError::Missing)?;
        let plain = self
            .sealer
            .open(name.as_bytes(), value)
            .ok_or(LoginStateError::Invalid)?;
        let login: LoginState =
            serde_json::from_slice(&plain).map_err(|_| LoginStateError::Invalid)?;
        if !constant_time_eq(login.state.as_bytes(), state.as_bytes()) {
            return Err(LoginStateError::Invalid);
        }
        let age = portcullis_core::time::unix_now().saturating_sub(login.issued_at);
        if age > self.ttl.as_secs() {
            return Err(LoginStateError::Expired);
        }
        Ok(login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cookies() -> LoginCookies {
        LoginCookies::new(&[&[7u8; 32]], true, "/cb", Duration::from_secs(600))
    }

    fn login(issued_at: u64) -> LoginState {
        LoginState {
            state: portcullis_core::random::token(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            provider: "oidc".into(),
            return_to: "/x".into(),
            issued_at,
            max_age: None,
            acr_values: Vec::new(),
        }
    }

    fn request_with(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_login_round_trips_through_its_cookie() {
        let c = cookies();
        let l = login(portcullis_core::time::unix_now());
        let set = c.set(&l, false);
        assert!(set.contains("Path=/cb") && set.contains("HttpOnly") && set.contains("Secure"));
        let back = c.take(&request_with(&set), &l.state).unwrap();
        assert_eq!(back.return_to, "/x");
        assert!(set.contains("SameSite=Lax"));
        // A provider's form_post is a cross-site POST: only a SameSite=None cookie
        // travels with it, and only when Secure.
        assert!(c.set(&l, true).contains("SameSite=None; Secure"));
        let plain = LoginCookies::new(&[&[7u8; 32]], false, "/cb", Duration::from_secs(600));
        assert!(plain.set(&l, true).contains("SameSite=Lax"));
    }

    #[test]
    fn another_state_or_a_forged_cookie_is_refused() {
        let c = cookies();
        let l = login(portcullis_core::time::unix_now());
        let h = request_with(&c.set(&l, false));
        let other = portcullis_core::random::token();
        assert_eq!(c.take(&h, &other).unwrap_err(), LoginStateError::Missing);
        assert_eq!(c.take(&h, "short").unwrap_err(), LoginStateError::BadState);
        assert_eq!(
            c.take(&HeaderMap::new(), &l.state).unwrap_err(),
            LoginStateError::Missing
        );
        // Same 16-character prefix, different state: the cookie opens but does not match.
        let mut twin = l.state.clone();
        twin.replace_range(40.., "AAA");
        assert_eq!(c.take(&h, &twin).unwrap_err(), LoginStateError::Invalid);
        // A cookie sealed under another secret.
        let stranger = LoginCookies::new(&[&[8u8; 32]], true, "/cb", Duration::from_secs(600));
        let forged = request_with(&stranger.set(&l, false));
        assert_eq!(
            c.take(&forged, &l.state).unwrap_err(),
            LoginStateError::Invalid
        );
    }

    #[test]
    fn only_a_login_cookie_that_opens_counts() {
        let c = cookies();
        let l = login(portcullis_core::time::unix_now());
        assert!(c.any_open(&request_with(&c.set(&l, false))));
        assert!(!c.any_open(&HeaderMap::new()));
        let stranger = LoginCookies::new(&[&[8u8; 32]], true, "/cb", Duration::from_secs(600));
        assert!(!c.any_open(&request_with(&stranger.set(&l, false))));
        let mut forged = HeaderMap::new();
        forged.insert(
            header::COOKIE,
            HeaderValue::from_static("portcullis_login_AAAAAAAAAAAAAAAA=junk"),
        );
        assert!(!c.any_open(&forged));
    }

    #[test]
    fn an_old_login_has_expired() {
        let c = cookies();
        let l = login(portcullis_core::time::unix_now() - 601);
        let h = request_with(&c.set(&l, false));
        assert_eq!(c.take(&h, &l.state).unwrap_err(), LoginStateError::Expired);
    }
}
