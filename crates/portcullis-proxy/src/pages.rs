//! Portcullis's own responses: small, self-contained HTML pages (no external assets, no
//! JavaScript) for browsers, and JSON for API clients. Every interpolated value is
//! escaped. Pages never contain tokens, secrets or stack traces.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use portcullis_core::html::{document, escape};
use serde_json::json;

use crate::body::ProxyBody;

/// A link offered on a page ("Sign in again").
pub(crate) struct Action<'a> {
    pub label: &'a str,
    pub href: &'a str,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f4f5;color:#18181b;margin:0}\
main{max-width:36rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}\
h1{font-size:1.5rem;margin-top:0}p{line-height:1.5}.code{color:#52525b;font-size:.875rem}\
a.button,button{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#1d4ed8;color:#fff;border:0;border-radius:.25rem;text-decoration:none;font-size:1rem;cursor:pointer}\
a.button:focus,button:focus{outline:3px solid #f59e0b;outline-offset:2px}";

/// The Content-Security-Policy of every page Portcullis writes: nothing may load or run
/// but the inline style sheet, forms post only to this origin, and no other site may
/// frame the page. `extra` adds what one page needs (`img-src data:` for an embedded
/// logo, a script nonce for the implicit flow's fragment page).
fn csp(extra: &str) -> HeaderValue {
    const BASE: &str =
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
    if extra.is_empty() {
        return HeaderValue::from_static(BASE);
    }
    HeaderValue::from_str(&format!("{BASE}; {extra}"))
        .unwrap_or_else(|_| HeaderValue::from_static(BASE))
}

fn base(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An HTML page in the common style with `inner` (already escaped) as its content;
/// `csp_extra` as for [`csp`].
fn html(status: StatusCode, title: &str, inner: &str, csp_extra: &str) -> Response<ProxyBody> {
    let mut resp = base(
        status,
        "text/html; charset=utf-8",
        document(title, STYLE, "", inner),
    );
    resp.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, csp(csp_extra));
    resp
}

/// An HTML page with a heading, a message and an optional action.
pub(crate) fn page(
    status: StatusCode,
    title: &str,
    message: &str,
    action: Option<Action<'_>>,
) -> Response<ProxyBody> {
    let action = action
        .map(|a| {
            format!(
                "<p><a class=\"button\" href=\"{}\">{}</a></p>",
                escape(a.href),
                escape(a.label)
            )
        })
        .unwrap_or_default();
    let inner = format!(
        "<h1>{}</h1>\n<p>{}</p>\n{action}<p class=\"code\">HTTP {} · Portcullis</p>",
        escape(title),
        escape(message),
        status.as_u16()
    );
    html(status, title, &inner, "")
}

/// `401` for a request without a session that is not sent to log in: a page with a
/// sign-in link for browsers, JSON naming the login URL for anything else.
pub(crate) fn unauthenticated(html_wanted: bool, login_href: &str) -> Response<ProxyBody> {
    if html_wanted {
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign in required",
            "You need to sign in to continue.",
            Some(Action {
                label: "Sign in",
                href: login_href,
            }),
        );
    }
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "unauthenticated", "message": "sign in required", "login_url": login_href}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portcullis\""),
    );
    r
}

/// `403` for a signed-in user the policy refuses, saying why.
pub(crate) fn denied(reason: &str, html_wanted: bool, logout_href: &str) -> Response<ProxyBody> {
    if html_wanted {
        page(
            StatusCode::FORBIDDEN,
            "Access denied",
            &format!(
                "You are signed in, but {reason}. Ask an administrator for access, or sign out and use another account."
            ),
            Some(Action {
                label: "Sign out",
                href: logout_href,
            }),
        )
    } else {
        json_error(StatusCode::FORBIDDEN, "forbidden", reason)
    }
}

/// The sign-out form (`GET` of the logout endpoint): a button that posts to it.
pub(crate) fn logout_form(logout_path: &str) -> Response<ProxyBody> {
    let inner = format!(
        "<h1>Sign out</h1>\n<p>End your session on this application?</p>\n<form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out</button></form>",
        escape(logout_path)
    );
    html(StatusCode::OK, "Sign out", &inner, "")
}

/// The implicit flow's fragment page: the provider put the answer in the URL fragment,
/// which only the browser sees; this page posts it to the callback on its own origin (a
/// fixed relative path, never a URL taken from the answer) and drops it from history.
pub(crate) fn implicit_redirect(callback_path: &str) -> Response<ProxyBody> {
    let nonce = portcullis_core::random::token();
    let script = "var f=document.getElementById('answer');\
new URLSearchParams(location.hash.slice(1)).forEach(function(v,k){\
var i=document.createElement('input');i.type='hidden';i.name=k;i.value=v;f.appendChild(i);});\
history.replaceState(null,'',location.pathname);f.submit();";
    let inner = format!(
        "<h1>Signing you in</h1>\n<form id=\"answer\" method=\"post\" action=\"{}\"></form>\n<noscript><p>Signing in with this provider needs JavaScript to pass the answer on. Turn it on, or ask the administrator to use the form_post response mode.</p></noscript>\n<script nonce=\"{nonce}\">{script}</script>",
        escape(callback_path)
    );
    let mut resp = html(
        StatusCode::OK,
        "Signing in",
        &inner,
        &format!("script-src 'nonce-{nonce}'"),
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The page a provider frames for front-channel logout: it may be framed by the
/// provider's origins (`ancestors`, space-separated), nothing else.
pub(crate) fn framed_logout(ancestors: &str) -> Response<ProxyBody> {
    let mut resp = base(
        StatusCode::OK,
        "text/html; charset=utf-8",
        document(
            "Signed out",
            STYLE,
            "",
            "<main><h1>Signed out</h1><p>The session has ended.</p></main>",
        ),
    );
    let policy =
        format!("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors {ancestors}");
    let policy = HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    resp.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, policy);
    resp
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    base(status, "application/json", value.to_string())
}

/// `{"error": code, "message": text}` for API clients.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(status, &json!({"error": code, "message": message}))
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    base(status, "text/plain; charset=utf-8", body)
}

/// A `302 Found` to `location` (already validated by the caller).
pub(crate) fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The sign-in page with one button per provider, branded from configuration: no
/// external assets (the logo is embedded), no JavaScript, landmarks and a heading for
/// screen readers, buttons in document order with a visible focus ring, and button
/// text in whichever of black or white contrasts more with the configured colour.
pub(crate) struct SignInPage {
    title: String,
    message: Option<String>,
    /// `data:` URI of the logo.
    logo: Option<String>,
    primary: String,
    on_primary: &'static str,
    background: String,
}

impl SignInPage {
    /// Prepares the page; reads and embeds the logo file.
    pub(crate) fn new(branding: &portcullis_config::Branding) -> Result<SignInPage, String> {
        use base64::Engine;
        const MAX_LOGO_BYTES: u64 = 256 * 1024;
        let logo = match &branding.logo_file {
            None => None,
            Some(path) => {
                let media = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(portcullis_config::logo_type)
                    .ok_or_else(|| {
                        format!(
                            "branding.logo_file {}: not a supported image type",
                            path.display()
                        )
                    })?;
                let size = std::fs::metadata(path)
                    .map_err(|e| format!("branding.logo_file {}: {e}", path.display()))?
                    .len();
                if size > MAX_LOGO_BYTES {
                    return Err(format!(
                        "branding.logo_file {} is {size} bytes; keep it under 256 KiB (it is sent with every sign-in page)",
                        path.display()
                    ));
                }
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("branding.logo_file {}: {e}", path.display()))?;
                Some(format!(
                    "data:{media};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ))
            }
        };
        Ok(SignInPage {
            title: branding.title.clone(),
            message: branding.message.clone(),
            logo,
            on_primary: portcullis_config::text_color_on(&branding.primary_color),
            primary: branding.primary_color.clone(),
            background: branding.background_color.clone(),
        })
    }

    /// The page, with `buttons` as (label, href) pairs.
    pub(crate) fn render(
        &self,
        status: StatusCode,
        buttons: &[(String, String)],
    ) -> Response<ProxyBody> {
        // Colours were validated as #rrggbb, so they are safe inside the style sheet.
        let style = format!(
            "body{{font-family:system-ui,sans-serif;background:{bg};color:#18181b;margin:0}}\
main{{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.15)}}\
h1{{font-size:1.5rem;margin:0 0 1rem}}p{{line-height:1.5;color:#3f3f46}}.logo{{display:block;max-height:4rem;max-width:100%;margin:0 0 1.5rem}}\
ul{{list-style:none;padding:0;margin:1.5rem 0 0}}li{{margin:0 0 .75rem}}\
a.button{{display:block;text-align:center;padding:.75rem 1rem;background:{primary};color:{on};border-radius:.375rem;text-decoration:none;font-size:1rem;font-weight:600}}\
a.button:hover{{text-decoration:underline}}\
a.button:focus-visible{{outline:3px solid #18181b;outline-offset:3px;box-shadow:0 0 0 3px #fff}}",
            bg = self.background,
            primary = self.primary,
            on = self.on_primary,
        );
        let logo = self
            .logo
            .as_ref()
            .map(|src| {
                format!(
                    "<img class=\"logo\" src=\"{src}\" alt=\"{}\">\n",
                    escape(&self.title)
                )
            })
            .unwrap_or_default();
        let message = self
            .message
            .as_ref()
            .map(|m| format!("<p>{}</p>\n", escape(m)))
            .unwrap_or_default();
        let items: String = buttons
            .iter()
            .map(|(label, href)| {
                format!(
                    "<li><a class=\"button\" href=\"{}\">{}</a></li>\n",
                    escape(href),
                    escape(label)
                )
            })
            .collect();
        let body = format!(
            "{logo}<h1 id=\"title\">{title}</h1>\n{message}<nav aria-label=\"Sign-in providers\">\n<ul>\n{items}</ul>\n</nav>",
            title = escape(&self.title),
        );
        let mut resp = base(
            status,
            "text/html; charset=utf-8",
            document(&self.title, &style, "aria-labelledby=\"title\"", &body),
        );
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp("img-src data:"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_sign_in_page_escapes_names_and_allows_no_script() {
        let branding = portcullis_config::Branding {
            title: "Acme <tools>".into(),
            message: Some("\"quoted\" & more".into()),
            logo_file: None,
            primary_color: "#1d4ed8".into(),
            background_color: "#f4f4f5".into(),
        };
        let page = SignInPage::new(&branding).unwrap();
        let resp = page.render(
            StatusCode::OK,
            &[(
                "Log in with <script>alert(1)</script>".into(),
                "/api/v1/auth/login?provider=x&rd=%2F\"onmouseover=\"x".into(),
            )],
        );
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.starts_with("default-src 'none'") && !csp.contains("script-src"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("Acme &lt;tools&gt;"), "{html}");
        assert!(html.contains("&quot;onmouseover=&quot;"), "{html}");
        // White text on the default blue, in the style sheet.
        assert!(html.contains("color:#ffffff"), "{html}");
    }
}
