//! What can go wrong while asking a provider who someone is. The proxy maps each variant
//! to a status code in one place; the variants only say where the fault lies.

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The provider's discovery document or keys could not be fetched or made no sense.
    #[error("identity provider {provider} is unavailable: {reason}")]
    ProviderUnavailable { provider: String, reason: String },

    /// The token endpoint refused the code. `error` is the OAuth error code
    /// (`invalid_grant` for a used or expired code).
    #[error("{error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenExchange {
        error: String,
        description: Option<String>,
        /// Whether the refusal is about the request (a bad, used or expired code) rather
        /// than about the provider or Portcullis's credentials.
        client_fault: bool,
    },

    /// An ID token (or bearer token) failed verification.
    #[error("invalid ID token: {0}")]
    InvalidToken(String),

    /// The provider vouched for the user, but a provider-level restriction refuses them
    /// (another Entra tenant, another Google domain, not in the GitHub organizations).
    #[error("{reason}")]
    NotAllowed { who: String, reason: String },

    /// The userinfo endpoint failed or contradicted the ID token.
    #[error("{0}")]
    UserInfo(String),
}

impl IdentityError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        IdentityError::InvalidToken(reason.into())
    }
}
