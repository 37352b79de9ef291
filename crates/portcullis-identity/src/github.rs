//! GitHub and GitHub Enterprise: OAuth 2.0 (not OpenID Connect) and the REST API.
//!
//! The login is a code flow with PKCE at `<web>/login/oauth/authorize`; there is no ID
//! token, so the user is whoever `GET <api>/user` says the access token belongs to. The
//! email is the profile's public one (GitHub only lets verified addresses be public), else
//! the primary address from `/user/emails` if and only if it is verified. With
//! organizations or teams configured, `/user/orgs` and `/user/teams` are read (every page)
//! and the user must belong to one; the memberships become groups `org` and `org:team`.

use portcullis_config::{ExposeSecret, GitHubConfig, ProviderConfig, ProviderKind};
use portcullis_core::Identity;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::discovery::error_chain;
use crate::oidc::{AuthorizationRequest, TokenResponse};
use crate::{IdentityError, pkce};

/// More pages than this is a misbehaving server, not a user.
const MAX_PAGES: usize = 100;

pub struct GitHubProvider {
    config: ProviderConfig,
    github: GitHubConfig,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

/// GitHub answers token errors with `200 OK` and an `error` field.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

impl GitHubProvider {
    /// A GitHub provider; `None` for any other kind.
    pub fn new(config: ProviderConfig, http: reqwest::Client) -> Option<Self> {
        let ProviderKind::GitHub(github) = &config.kind else {
            return None;
        };
        Some(GitHubProvider {
            github: github.clone(),
            config,
            http,
        })
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    fn endpoint(&self, path: &str) -> Url {
        self.github
            .web_url
            .join(path)
            .expect("a relative path joins")
    }

    pub fn authorization_request(&self, redirect_uri: &str) -> AuthorizationRequest {
        let state = portcullis_core::random::token();
        let pkce_verifier = pkce::verifier();
        let mut url = self.endpoint("login/oauth/authorize");
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", &pkce::challenge(&pkce_verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("allow_signup", "false");
        AuthorizationRequest {
            url: url.into(),
            state,
            // No ID token, so no nonce to check; the state cookie binds the login.
            nonce: String::new(),
            pkce_verifier,
        }
    }

    fn unavailable(&self, reason: String) -> IdentityError {
        IdentityError::ProviderUnavailable {
            provider: self.config.name.clone(),
            reason,
        }
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, IdentityError> {
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| s.expose_secret().to_string())
            .unwrap_or_default();
        let form = [
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ];
        let response = crate::http::send(
            "idp.token",
            self.http
                .post(self.endpoint("login/oauth/access_token"))
                .header("accept", "application/json")
                .form(&form),
        )
        .await
        .map_err(|e| {
            self.unavailable(format!("token endpoint unreachable: {}", error_chain(&e)))
        })?;
        let status = response.status();
        let answer: TokenAnswer =
            response
                .json()
                .await
                .map_err(|e| IdentityError::TokenExchange {
                    error: format!("HTTP {status}"),
                    description: Some(format!("not a token answer: {e}")),
                    client_fault: false,
                })?;
        match (answer.error, answer.access_token) {
            (None, Some(access_token)) if status.is_success() => Ok(TokenResponse {
                access_token,
                token_type: answer.token_type,
                expires_in: answer.expires_in,
                refresh_token: answer.refresh_token,
                id_token: None,
            }),
            (Some(error), _) => Err(IdentityError::TokenExchange {
                client_fault: error == "bad_verification_code" || error == "invalid_grant",
                error,
                description: answer.error_description,
            }),
            _ => Err(IdentityError::TokenExchange {
                error: format!("HTTP {status}"),
                description: Some("no access token in the answer".into()),
                client_fault: false,
            }),
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        url: Url,
        token: &str,
    ) -> Result<(T, Option<Url>), IdentityError> {
        let response = crate::http::send(
            "github.api",
            self.http
                .get(url.clone())
                .bearer_auth(token)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28"),
        )
        .await
        .map_err(|e| {
            IdentityError::UserInfo(format!(
                "GitHub API unreachable ({}): {}",
                url.path(),
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(IdentityError::UserInfo(format!(
                "GitHub API {} answered {status}",
                url.path()
            )));
        }
        let next = next_page(response.headers(), &self.github.api_url);
        let value = response.json::<T>().await.map_err(|e| {
            IdentityError::UserInfo(format!(
                "GitHub API {} answered unexpected JSON: {e}",
                url.path()
            ))
        })?;
        Ok((value, next))
    }

    /// Every item of a paged list (`Link: <...>; rel="next"`).
    async fn all_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<Vec<T>, IdentityError> {
        let mut url = Some(
            self.github
                .api_url
                .join(&format!("{path}?per_page=100"))
                .expect("a relative path joins"),
        );
        let mut all = Vec::new();
        let mut pages = 0;
        while let Some(current) = url.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(IdentityError::UserInfo(format!(
                    "GitHub API {path} has more than {MAX_PAGES} pages"
                )));
            }
            let (mut page, next): (Vec<T>, _) = self.get(current, token).await?;
            all.append(&mut page);
            url = next;
        }
        Ok(all)
    }

    fn restricted(&self) -> bool {
        !self.github.orgs.is_empty() || !self.github.teams.is_empty()
    }

    pub async fn identity(&self, tokens: &TokenResponse) -> Result<Identity, IdentityError> {
        let token = &tokens.access_token;
        let (user, _): (User, _) = self
            .get(self.github.api_url.join("user").expect("joins"), token)
            .await?;
        let email = match user.email.filter(|e| !e.trim().is_empty()) {
            Some(public) => Some(public),
            // Without the user:email scope GitHub refuses this list: the user then simply
            // has no email (a rule on emails does not match them), rather than no login.
            None => match self.all_pages::<Email>("user/emails", token).await {
                Ok(emails) => emails
                    .into_iter()
                    .find(|e| e.primary && e.verified)
                    .map(|e| e.email),
                Err(e) => {
                    tracing::warn!(provider = %self.config.name, user = %user.login, "no email for the user: {e} (is the user:email scope requested?)");
                    None
                }
            },
        };
        let mut identity = Identity::from(portcullis_core::IdentityFields {
            id: user.id.to_string(),
            email,
            name: user.name.filter(|n| !n.trim().is_empty()),
            username: Some(user.login),
            groups: Vec::new(),
            provider: portcullis_core::provider_name(&self.config.name),
            auth_time: Some(portcullis_core::time::unix_now()),
            ..portcullis_core::IdentityFields::default()
        });
        let read_org = self.config.scopes.iter().any(|s| s == "read:org");
        if self.restricted() || read_org {
            let orgs: Vec<Org> = self.all_pages("user/orgs", token).await?;
            identity
                .groups
                .extend(orgs.into_iter().map(|o| o.login.to_ascii_lowercase()));
            let teams: Vec<Team> = self.all_pages("user/teams", token).await?;
            identity.groups.extend(
                teams
                    .into_iter()
                    .map(|t| format!("{}:{}", t.organization.login, t.slug).to_ascii_lowercase()),
            );
        }
        if self.restricted() {
            let member = identity
                .groups
                .iter()
                .any(|g| self.github.orgs.contains(g) || self.github.teams.contains(g));
            if !member {
                return Err(IdentityError::NotAllowed {
                    who: identity.display().to_string(),
                    reason:
                        "not a member of the GitHub organizations or teams this application admits"
                            .into(),
                });
            }
        }
        Ok(identity)
    }
}

/// The `rel="next"` URL of a `Link` header (RFC 8288), if it stays on the API's origin
/// (the token is never sent anywhere else).
fn next_page(headers: &HeaderMap, api: &Url) -> Option<Url> {
    let link = headers.get("link")?.to_str().ok()?;
    for part in link.split(',') {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        if is_next {
            let url =
                Url::parse(target.trim().trim_start_matches('<').trim_end_matches('>')).ok()?;
            return (url.origin() == api.origin()).then_some(url);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_next_page_is_found_and_kept_on_the_api_host() {
        let api = Url::parse("https://api.github.com/").unwrap();
        let mut h = HeaderMap::new();
        h.insert("link", HeaderValue::from_static(
            "<https://api.github.com/user/orgs?page=1>; rel=\"prev\", <https://api.github.com/user/orgs?page=3>; rel=\"next\", <https://api.github.com/user/orgs?page=9>; rel=\"last\""));
        assert_eq!(
            next_page(&h, &api).unwrap().as_str(),
            "https://api.github.com/user/orgs?page=3"
        );
        h.insert(
            "link",
            HeaderValue::from_static("<https://evil.example/steal>; rel=\"next\""),
        );
        assert_eq!(next_page(&h, &api), None);
        assert_eq!(next_page(&HeaderMap::new(), &api), None);
    }
}
