//! Portcullis's own endpoints: one table of paths and the methods each takes. Routing,
//! the `Allow` of a `405`, `portcullis check` (a callback URL must not land on one of
//! these) and the README's endpoint list all come from it.
//!
//! Everything not in the table is protected traffic for the app.

use http::Method;

/// Which own endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Status,
    Login,
    Me,
    Logout,
    Verify,
    Healthz,
    Readyz,
    Scim,
    /// The path of the configured redirect URL.
    Callback,
    /// The implicit flow's fragment page, at its configured path.
    ImplicitRedirect,
    /// The identity assertion's public keys (with `identity_jwt.enabled`).
    Jwks,
    /// OpenID Connect Back-Channel Logout: the provider posts a logout token.
    BackchannelLogout,
    /// OpenID Connect Front-Channel Logout: the provider frames this page.
    FrontchannelLogout,
    /// Shared Signals push delivery: `/api/v1/auth/ssf/<transmitter>`.
    Ssf,
    /// The stand-in app that `portcullis check --live` probes (`diagnostics.canary`).
    Canary,
}

#[derive(Debug)]
pub struct Endpoint {
    pub own: Own,
    /// The path, or the prefix when `prefix` is set.
    pub path: &'static str,
    /// Whether everything below `path` (after a `/`) is this endpoint too.
    pub prefix: bool,
    /// The methods taken, as the `Allow` field lists them; `None`: any method.
    allow_methods: Option<&'static [Method]>,
    /// The methods taken, as the `Allow` field of a 405 says them.
    pub allow: &'static str,
}

const READ: &[Method] = &[Method::GET, Method::HEAD];
const READ_OR_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const POST: &[Method] = &[Method::POST];

pub const STATUS: Endpoint = Endpoint {
    own: Own::Status,
    path: "/api/v1/auth/status",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
pub const LOGIN: Endpoint = Endpoint {
    own: Own::Login,
    path: "/api/v1/auth/login",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
pub const ME: Endpoint = Endpoint {
    own: Own::Me,
    path: "/api/v1/auth/me",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
pub const LOGOUT: Endpoint = Endpoint {
    own: Own::Logout,
    path: "/api/v1/auth/logout",
    prefix: false,
    allow_methods: Some(READ_OR_POST),
    allow: "GET, HEAD, POST",
};
/// Forward-auth; Envoy's path-prefix mode appends the original path.
pub const VERIFY: Endpoint = Endpoint {
    own: Own::Verify,
    path: "/api/v1/auth/verify",
    prefix: true,
    allow_methods: None,
    allow: "",
};
pub const HEALTHZ: Endpoint = Endpoint {
    own: Own::Healthz,
    path: "/healthz",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
pub const READYZ: Endpoint = Endpoint {
    own: Own::Readyz,
    path: "/readyz",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
/// `/v1/scim/v2/<endpoint>/...`; the SCIM service answers its own 405s.
pub const SCIM: Endpoint = Endpoint {
    own: Own::Scim,
    path: "/v1/scim/v2",
    prefix: true,
    allow_methods: None,
    allow: "",
};
/// The identity assertion's public keys.
pub const JWKS: Endpoint = Endpoint {
    own: Own::Jwks,
    path: "/.well-known/portcullis/jwks.json",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
/// At the path of the configured redirect URL.
pub const CALLBACK: Endpoint = Endpoint {
    own: Own::Callback,
    path: "/api/v1/auth/callback",
    prefix: false,
    allow_methods: Some(READ_OR_POST),
    allow: "GET, HEAD, POST",
};
/// At the path of `auth.implicit_redirect_url`.
pub const IMPLICIT_REDIRECT: Endpoint = Endpoint {
    own: Own::ImplicitRedirect,
    path: "/api/v1/auth/redirect",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};

pub const BACKCHANNEL_LOGOUT: Endpoint = Endpoint {
    own: Own::BackchannelLogout,
    path: "/api/v1/auth/backchannel-logout",
    prefix: false,
    allow_methods: Some(POST),
    allow: "POST",
};
pub const FRONTCHANNEL_LOGOUT: Endpoint = Endpoint {
    own: Own::FrontchannelLogout,
    path: "/api/v1/auth/frontchannel-logout",
    prefix: false,
    allow_methods: Some(READ),
    allow: "GET, HEAD",
};
/// `/api/v1/auth/ssf/<transmitter>`.
pub const SSF: Endpoint = Endpoint {
    own: Own::Ssf,
    path: "/api/v1/auth/ssf",
    prefix: true,
    allow_methods: Some(POST),
    allow: "POST",
};

/// The canary of `portcullis check --live`, and everything below it.
pub const CANARY: Endpoint = Endpoint {
    own: Own::Canary,
    path: "/.well-known/portcullis/canary",
    prefix: true,
    allow_methods: None,
    allow: "",
};

/// The endpoints at fixed paths, in the order they are matched.
pub const FIXED: &[Endpoint] = &[
    STATUS,
    LOGIN,
    ME,
    LOGOUT,
    VERIFY,
    HEALTHZ,
    READYZ,
    SCIM,
    JWKS,
    BACKCHANNEL_LOGOUT,
    FRONTCHANNEL_LOGOUT,
    SSF,
    CANARY,
];

impl Endpoint {
    /// Whether `path` is this endpoint (or, for a prefix, below it).
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.path) {
            Some("") => true,
            Some(rest) => self.prefix && rest.starts_with('/'),
            None => false,
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.allow_methods.is_none_or(|m| m.contains(method))
    }
}

/// The fixed endpoint at `path`, if any.
pub fn find(path: &str) -> Option<(Own, &'static Endpoint)> {
    FIXED.iter().find(|e| e.matches(path)).map(|e| (e.own, e))
}

/// Whether a configured path (the callback's, say) would be shadowed by, or shadow, one
/// of the fixed endpoints.
pub fn is_reserved(path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    FIXED
        .iter()
        .any(|e| e.matches(trimmed) || e.matches(path) || (e.prefix && trimmed == e.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_paths_and_prefixes_are_found() {
        assert_eq!(find("/api/v1/auth/me").map(|f| f.0), Some(Own::Me));
        assert_eq!(find("/api/v1/auth/me/").map(|f| f.0), None);
        assert_eq!(find("/api/v1/auth/verify").map(|f| f.0), Some(Own::Verify));
        assert_eq!(
            find("/api/v1/auth/verify/app/x").map(|f| f.0),
            Some(Own::Verify)
        );
        assert_eq!(find("/api/v1/auth/verifyx").map(|f| f.0), None);
        assert_eq!(find("/v1/scim/v2/okta/Users").map(|f| f.0), Some(Own::Scim));
        assert_eq!(find("/v1/scim/v2x").map(|f| f.0), None);
        assert_eq!(find("/app").map(|f| f.0), None);
    }

    #[test]
    fn methods_follow_the_table() {
        assert!(LOGOUT.allows(&Method::POST));
        assert!(!LOGIN.allows(&Method::POST));
        assert!(VERIFY.allows(&Method::DELETE));
        assert_eq!(LOGOUT.allow, "GET, HEAD, POST");
        for e in FIXED {
            if let Some(methods) = e.allow_methods {
                let listed: Vec<&str> = e.allow.split(", ").collect();
                let actual: Vec<&str> = methods.iter().map(Method::as_str).collect();
                assert_eq!(listed, actual, "{}", e.path);
            }
        }
    }

    #[test]
    fn reserved_paths_cover_every_fixed_endpoint() {
        for e in FIXED {
            assert!(is_reserved(e.path), "{}", e.path);
            assert!(is_reserved(&format!("{}/", e.path)), "{}", e.path);
        }
        assert!(is_reserved("/v1/scim/v2/okta"));
        assert!(!is_reserved("/api/v1/auth/callback"));
        assert!(!is_reserved("/v1/oauth/callback/"));
    }
}
