//! Logging in through a running Portcullis whose provider is the development provider
//! (`portcullis dev-idp`), the way a browser does: the redirect, the provider's form, the
//! callback. Shared by the examples that need a session.

use url::Url;

fn cookie_pair(resp: &reqwest::Response, prefix: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

pub(crate) async fn log_in(
    http: &reqwest::Client,
    base: &str,
    user: &str,
) -> Result<String, String> {
    let start = http
        .get(base)
        .header("accept", "text/html")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let login_cookie = cookie_pair(&start, "portcullis_login_").ok_or("no login cookie")?;
    let authorize = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no redirect to the provider")?;
    let authorize = Url::parse(authorize).map_err(|e| e.to_string())?;
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("username".into(), user.into()));
    let mut post_to = authorize.clone();
    post_to.set_query(None);
    let signed_in = http
        .post(post_to)
        .form(&form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let callback = signed_in
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no redirect back from the provider")?
        .to_string();
    let done = http
        .get(callback)
        .header("cookie", login_cookie)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    cookie_pair(&done, "session_token=")
        .ok_or_else(|| format!("no session cookie (HTTP {})", done.status()))
}
