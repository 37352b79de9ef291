//! OpenID Connect Discovery 1.0: finding a provider's endpoints from its issuer.
//!
//! §4: the document lives at `<issuer>/.well-known/openid-configuration`. §4.3: "The
//! issuer value returned MUST be identical to the Issuer URL that was used as the prefix
//! to /.well-known/openid-configuration to retrieve the configuration information."
//! Operators often paste the issuer with or without a trailing slash, so that one
//! difference is forgiven; the document's own value is then used, exactly, for `iss`.

use serde::Deserialize;
use url::Url;

use crate::IdentityError;

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// The placeholder in the issuer of Entra's multi-tenant discovery documents.
pub(crate) const TENANT_TEMPLATE: &str = "{tenantid}";

/// The parts of a discovery document Portcullis uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub response_modes_supported: Vec<String>,
    /// RFC 7662: where opaque access tokens are introspected.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// OpenID Connect Back-Channel Logout 1.0 §2.1.
    #[serde(default)]
    pub backchannel_logout_supported: bool,
    #[serde(default)]
    pub backchannel_logout_session_supported: bool,
    /// OpenID Connect Front-Channel Logout 1.0 §3.
    #[serde(default)]
    pub frontchannel_logout_supported: bool,
    #[serde(default)]
    pub frontchannel_logout_session_supported: bool,
}

/// Where the discovery document of `configured` is: the URL itself when it already ends
/// in the well-known path, else that path appended.
pub fn discovery_document_url(configured: &Url) -> String {
    let s = configured.as_str();
    if configured.path().ends_with(WELL_KNOWN) {
        s.to_string()
    } else {
        format!("{}{WELL_KNOWN}", s.trim_end_matches('/'))
    }
}

/// The issuer the document must declare.
pub fn expected_issuer(configured: &Url) -> String {
    let s = configured.as_str();
    match s.strip_suffix(WELL_KNOWN) {
        Some(issuer) => issuer.to_string(),
        None => s.to_string(),
    }
}

impl ProviderMetadata {
    pub async fn fetch(
        http: &reqwest::Client,
        provider: &str,
        configured: &Url,
        multi_tenant: bool,
    ) -> Result<ProviderMetadata, IdentityError> {
        let url = discovery_document_url(configured);
        let unavailable = |reason: String| IdentityError::ProviderUnavailable {
            provider: provider.to_string(),
            reason,
        };
        let response = crate::http::send(
            "idp.discovery",
            http.get(&url).header("accept", "application/json"),
        )
        .await
        .map_err(|e| unavailable(format!("cannot fetch {url}: {}", error_chain(&e))))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("{url} answered {}", response.status())));
        }
        let metadata: ProviderMetadata = response
            .json()
            .await
            .map_err(|e| unavailable(format!("{url} is not a discovery document: {e}")))?;
        let expected = expected_issuer(configured);
        // Entra's multi-tenant endpoints (`common`, `organizations`) publish an issuer
        // template, `https://login.microsoftonline.com/{tenantid}/v2.0`, filled in from
        // each token's `tid`; the host must still be the one configured.
        let template_ok = multi_tenant
            && metadata.issuer.contains(TENANT_TEMPLATE)
            && Url::parse(&metadata.issuer.replace(TENANT_TEMPLATE, "t"))
                .is_ok_and(|u| u.origin() == configured.origin());
        if !template_ok && metadata.issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err(unavailable(format!(
                "the discovery document at {url} names the issuer {:?}, not {expected:?}; set the issuer/discovery URL to exactly the provider's issuer",
                metadata.issuer
            )));
        }
        for (name, endpoint) in [
            (
                "authorization_endpoint",
                Some(&metadata.authorization_endpoint),
            ),
            ("jwks_uri", Some(&metadata.jwks_uri)),
            ("token_endpoint", metadata.token_endpoint.as_ref()),
        ] {
            if let Some(endpoint) = endpoint
                && Url::parse(endpoint).is_err()
            {
                return Err(unavailable(format!(
                    "the discovery document's {name} is not a URL"
                )));
            }
        }
        Ok(metadata)
    }
}

/// An error and its causes on one line (reqwest hides the useful part in `source`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_url_is_derived_from_an_issuer_or_taken_as_given() {
        let issuer = Url::parse("https://idp.example.com/realms/main").unwrap();
        assert_eq!(
            discovery_document_url(&issuer),
            "https://idp.example.com/realms/main/.well-known/openid-configuration"
        );
        assert_eq!(
            expected_issuer(&issuer),
            "https://idp.example.com/realms/main"
        );
        let doc = Url::parse("https://x.okta.com/.well-known/openid-configuration").unwrap();
        assert_eq!(discovery_document_url(&doc), doc.as_str());
        assert_eq!(expected_issuer(&doc), "https://x.okta.com");
        let slash = Url::parse("https://tenant.auth0.com/").unwrap();
        assert_eq!(
            discovery_document_url(&slash),
            "https://tenant.auth0.com/.well-known/openid-configuration"
        );
    }
}
