//! What `portcullis check` asks each identity provider beyond its metadata, to find the two
//! faults that otherwise show only as a failed login in a browser: client credentials the
//! provider does not accept, and a redirect URL it has not registered.
//!
//! - Credentials: the token endpoint is asked to redeem an authorization code that cannot
//!   exist (random, never issued), with the client authentication a login uses. Its
//!   refusal says which it is: `invalid_client` (GitHub `incorrect_client_credentials`,
//!   Entra `AADSTS7000215`, ...) means the id or secret is wrong; `invalid_grant` (GitHub
//!   `bad_verification_code`) means they were accepted and only the code was refused.
//!   No real code is ever sent, so nothing can be consumed.
//! - Redirect URL: the authorization request a login sends, not followed. A provider
//!   that checks the redirect URL first answers with its own error page for an
//!   unregistered one (oidc-provider `invalid_redirect_uri`, Entra `AADSTS50011`, Google
//!   `redirect_uri_mismatch`, Okta, Auth0 "Callback URL mismatch", Keycloak); one that
//!   goes on to its sign-in accepted it. Where the answer cannot tell (GitHub asks for a
//!   sign-in first), that is what is reported.

/// Which credential a refusal points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Culprit {
    ClientId,
    ClientSecret,
    /// The provider does not say which.
    IdOrSecret,
    /// The client is known but may not use the authorization code grant.
    Grant,
}

/// What the token endpoint said of the client's credentials.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    Accepted,
    Refused {
        culprit: Culprit,
        why: String,
    },
    /// An answer that names neither.
    Unclear(String),
}

fn has(text: &str, marker: &str) -> bool {
    text.to_ascii_lowercase()
        .contains(&marker.to_ascii_lowercase())
}

/// Classifies the token endpoint's refusal of the impossible code.
pub(crate) fn credentials(error: &str, description: Option<&str>) -> Credentials {
    let description = description.unwrap_or("");
    let refused = |culprit, why: &str| Credentials::Refused {
        culprit,
        why: why.to_string(),
    };
    // Entra names the fault in its description.
    if has(description, "AADSTS7000215") {
        return refused(
            Culprit::ClientSecret,
            "the client secret is not one of the application's (Entra AADSTS7000215)",
        );
    }
    if has(description, "AADSTS7000222") {
        return refused(
            Culprit::ClientSecret,
            "the client secret has expired (Entra AADSTS7000222)",
        );
    }
    if has(description, "AADSTS700016") {
        return refused(
            Culprit::ClientId,
            "no application with this client id in the tenant (Entra AADSTS700016)",
        );
    }
    match error {
        "invalid_grant" | "bad_verification_code" => Credentials::Accepted,
        "invalid_client" | "incorrect_client_credentials" | "unauthorized" => refused(
            Culprit::IdOrSecret,
            &format!("the provider refused the client's credentials ({error})"),
        ),
        "unauthorized_client" => refused(
            Culprit::Grant,
            "the client may not use the authorization code grant (unauthorized_client)",
        ),
        e if e.starts_with("HTTP 401") => refused(
            Culprit::IdOrSecret,
            "the token endpoint answered 401 Unauthorized",
        ),
        _ if description.is_empty() => Credentials::Unclear(error.to_string()),
        _ => Credentials::Unclear(format!("{error}: {description}")),
    }
}

/// What the authorization endpoint said of the redirect URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// It went on to its sign-in (or named no fault where it would have).
    Registered,
    NotRegistered(String),
    /// It refused the request for another reason (an unknown client id, a scope).
    Refused(String),
    CannotTell(String),
}

/// The texts providers answer an unregistered redirect URL with.
const NOT_REGISTERED: &[&str] = &[
    "AADSTS50011",
    "redirect_uri_mismatch",
    "invalid_redirect_uri",
    "redirect_uri did not match",
    "Callback URL mismatch",
    "must be a Login redirect URI",
    "The redirect_uri MUST match",
    "redirect_uri is not associated",
    "Invalid parameter: redirect_uri",
    "Invalid redirect_uri",
    "redirect_uri is not registered",
];

/// The texts providers answer an unknown client id with.
const UNKNOWN_CLIENT: &[&str] = &[
    "AADSTS700016",
    "invalid_client",
    "client not found",
    "Client not found",
    "unknown client",
];

/// A short, tag-free excerpt of an error page, for the report.
fn excerpt(body: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = words.join(" ");
    if out.len() > 200 {
        let mut cut = 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Classifies the answer to the authorization request of a login (not followed).
/// `github`: GitHub shows its sign-in to a browser without a session before it checks
/// the redirect URL; `entra`: Entra shows its sign-in page (200) only for a request whose
/// redirect URL it accepted.
pub(crate) fn registration(
    status: u16,
    location: Option<&str>,
    body: &str,
    redirect_url: &str,
    github: bool,
    entra: bool,
) -> Registration {
    // The Location's query decoded (Auth0 names the fault in error_description there).
    let decoded: Vec<String> = location
        .map(|l| l.split_once('?').map_or("", |(_, q)| q))
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| format!("{k} {v}"))
                .collect()
        })
        .unwrap_or_default();
    let seen = format!("{} {} {body}", location.unwrap_or(""), decoded.join(" "));
    if let Some(marker) = NOT_REGISTERED.iter().find(|m| has(&seen, m)) {
        return Registration::NotRegistered(format!("the provider answered {marker}"));
    }
    if let Some(marker) = UNKNOWN_CLIENT.iter().find(|m| has(&seen, m)) {
        return Registration::Refused(format!(
            "the provider does not know the client id ({marker})"
        ));
    }
    if (300..400).contains(&status) {
        let Some(location) = location else {
            return Registration::CannotTell(format!("a {status} without a Location"));
        };
        if location.starts_with(redirect_url) {
            // Sent back to the callback: the URL is registered; an error there is about
            // something else.
            return match url::Url::parse(location).ok().and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "error")
                    .map(|(_, v)| v.into_owned())
            }) {
                Some(error) => Registration::Refused(format!(
                    "the provider sent the login back with error={error}"
                )),
                None => Registration::Registered,
            };
        }
        if github {
            return Registration::CannotTell(
                "GitHub asks for a sign-in before it checks the redirect URL".into(),
            );
        }
        return Registration::Registered;
    }
    if (200..300).contains(&status) {
        if entra {
            return Registration::Registered;
        }
        return Registration::CannotTell(format!(
            "the provider answered {status} with a page that names no error"
        ));
    }
    Registration::Refused(format!("HTTP {status}: {}", excerpt(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refusals_name_the_credential_at_fault() {
        assert_eq!(credentials("invalid_grant", None), Credentials::Accepted);
        assert_eq!(
            credentials(
                "bad_verification_code",
                Some("The code passed is incorrect")
            ),
            Credentials::Accepted
        );
        let wrong = |e, d| match credentials(e, d) {
            Credentials::Refused { culprit, .. } => Some(culprit),
            _ => None,
        };
        assert_eq!(
            wrong("invalid_client", Some("client authentication failed")),
            Some(Culprit::IdOrSecret)
        );
        assert_eq!(
            wrong("incorrect_client_credentials", None),
            Some(Culprit::IdOrSecret)
        );
        assert_eq!(
            wrong(
                "invalid_client",
                Some("AADSTS7000215: Invalid client secret provided.")
            ),
            Some(Culprit::ClientSecret)
        );
        assert_eq!(
            wrong(
                "unauthorized_client",
                Some("AADSTS700016: Application with identifier 'x' was not found")
            ),
            Some(Culprit::ClientId)
        );
        assert_eq!(wrong("unauthorized_client", None), Some(Culprit::Grant));
        assert_eq!(
            wrong("HTTP 401 Unauthorized", None),
            Some(Culprit::IdOrSecret)
        );
        assert!(matches!(
            credentials("invalid_request", Some("missing parameter")),
            Credentials::Unclear(_)
        ));
    }

    #[test]
    fn the_providers_unregistered_redirect_answers_are_recognized() {
        let cb = "https://app.example.com/api/v1/auth/callback";
        let not = |status, location, body: &str| {
            matches!(
                registration(status, location, body, cb, false, false),
                Registration::NotRegistered(_)
            )
        };
        assert!(not(
            400,
            None,
            "<h1>oops!</h1><pre>error: invalid_redirect_uri</pre>"
        ));
        assert!(not(
            200,
            None,
            "AADSTS50011: The redirect URI specified in the request does not match"
        ));
        assert!(not(400, None, "Error 400: redirect_uri_mismatch"));
        assert!(not(
            400,
            None,
            "The 'redirect_uri' parameter must be a Login redirect URI in the client app settings"
        ));
        assert!(not(
            302,
            Some(
                "https://tenant.auth0.com/error?error=invalid_request&error_description=Callback%20URL%20mismatch"
            ),
            ""
        ));
        assert!(not(400, None, "Invalid parameter: redirect_uri"));
        // Went on to the sign-in.
        assert_eq!(
            registration(303, Some("/interaction/abc"), "", cb, false, false),
            Registration::Registered
        );
        assert_eq!(
            registration(200, None, "<html>Sign in</html>", cb, false, true),
            Registration::Registered
        );
        // Cannot tell.
        assert!(matches!(
            registration(
                302,
                Some("https://github.com/login?return_to=x"),
                "",
                cb,
                true,
                false
            ),
            Registration::CannotTell(_)
        ));
        assert!(matches!(
            registration(200, None, "<html>Sign in</html>", cb, false, false),
            Registration::CannotTell(_)
        ));
        // Another refusal.
        assert!(matches!(
            registration(
                400,
                None,
                "error: invalid_client client is invalid",
                cb,
                false,
                false
            ),
            Registration::Refused(_)
        ));
        assert!(matches!(
            registration(
                302,
                Some(&format!("{cb}?error=invalid_scope&state=x")),
                "",
                cb,
                false,
                false
            ),
            Registration::Refused(_)
        ));
    }
}
