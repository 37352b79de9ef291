//! The development provider's pages: the login form, and an error page.

use portcullis_core::html::{document, escape};

const STYLE: &str = "body { font-family: system-ui, sans-serif; background: #f4f4f5; color: #18181b; margin: 0; }
main { max-width: 26rem; margin: 3rem auto; background: #fff; padding: 2rem; border-radius: .5rem; box-shadow: 0 1px 3px rgba(0,0,0,.15); }
.warning { background: #fef3c7; color: #78350f; border: 1px solid #d97706; padding: .75rem; border-radius: .25rem; }
label { display: block; margin-top: 1rem; font-weight: 600; }
input[type=text], input[type=email] { width: 100%; box-sizing: border-box; padding: .5rem; margin-top: .25rem; border: 1px solid #71717a; border-radius: .25rem; font-size: 1rem; }
.hint { font-size: .875rem; color: #3f3f46; margin: .25rem 0 0; }
button { margin-top: 1.5rem; width: 100%; padding: .75rem; font-size: 1rem; background: #1d4ed8; color: #fff; border: 0; border-radius: .25rem; cursor: pointer; }
button:focus, input:focus { outline: 3px solid #f59e0b; outline-offset: 2px; }
.error { color: #b91c1c; font-weight: 600; }";

/// The sign-in form. `hidden` carries the authorization request to the POST.
pub(crate) fn login_form(
    client_id: &str,
    hidden: &[(String, String)],
    error: Option<&str>,
) -> String {
    let fields: String = hidden
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(k),
                escape(v)
            )
        })
        .collect();
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let body = format!(
        r##"<h1>Sign in</h1>
<p class="warning"><strong>Development identity provider.</strong> It signs in anyone who fills in this form. Never use it to protect a real application.</p>
<p>Application: <code>{client}</code></p>
{error}
<form method="post" action="authorize">
{fields}
<label for="username">User name</label>
<input type="text" id="username" name="username" required autocomplete="username" autofocus>
<label for="email">Email</label>
<input type="email" id="email" name="email" autocomplete="email" aria-describedby="email-hint">
<p class="hint" id="email-hint">Defaults to the user name at example.com.</p>
<label for="groups">Groups</label>
<input type="text" id="groups" name="groups" aria-describedby="groups-hint">
<p class="hint" id="groups-hint">Comma-separated, for example <code>admins, developers</code>.</p>
<button type="submit">Sign in</button>
</form>"##,
        client = escape(client_id),
    );
    document(
        "Sign in: Portcullis development identity provider",
        STYLE,
        "",
        &body,
    )
}

/// A plain error page for requests that cannot be sent back to the client.
pub(crate) fn error_page(message: &str) -> String {
    document(
        "Sign-in error",
        STYLE,
        "",
        &format!("<h1>Sign-in error</h1>\n<p>{}</p>", escape(message)),
    )
}
