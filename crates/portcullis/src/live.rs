//! `portcullis check --live URL`: the known bypass attempts, sent from outside through the
//! real chain (ingress or front proxy, then Portcullis) to the canary that stands in for
//! the app (`diagnostics.canary`), and a report, attempt by attempt, of what reached it.
//!
//! Requests are written byte for byte (an HTTP client library would normalize the dot
//! segments and encodings that some of the attempts are about). The signed-in test user's
//! credential is read from a file, sent only to the URL given, and never stored.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CANARY: &str = "/.well-known/portcullis/canary";
const TIMEOUT: Duration = Duration::from_secs(15);
/// What a forged identity says: easy to find in whatever reached the app.
const FORGED: &str = "forged-by-portcullis-check";
/// A forged credential header's value: its length (all the canary shows of it) is one no
/// real token has.
const FORGED_SECRET: &str = "forged!";
const FORGED_IP: &str = "203.0.113.66";
const FORGED_HOST: &str = "evil.example";

/// The identity headers Portcullis sets (or the front proxy sets from its answer), in the
/// spellings a client can try: exact, lower case, underscores (which some servers and
/// frameworks read as dashes).
const IDENTITY_HEADERS: &[&str] = &[
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Forwarded-Provider",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "x-forwarded-email",
    "X_Forwarded_Email",
    "X_Forwarded_User",
    "X_Forwarded_Groups",
];
const IDENTITY_SECRETS: &[&str] = &[
    "X-Forwarded-Access-Token",
    "X-Portcullis-Jwt-Assertion",
    "X-Auth-Request-Access-Token",
];

/// The signed-in test user's credential.
enum Credential {
    /// The cookies (name, value) of a browser signed in; the first is the session's.
    Cookies(Vec<(String, String)>),
    Bearer(String),
}

impl Credential {
    /// A `Cookie: name=value; ...` line (or a bare `name=value; ...`), a Netscape
    /// `cookies.txt` (curl's `-c`, browser exports), or `Bearer <token>`.
    fn read(path: &Path) -> anyhow::Result<Credential> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--cookie-file {}", path.display()))?;
        let trimmed = text.trim();
        if let Some(token) = trimmed
            .strip_prefix("Bearer ")
            .or_else(|| trimmed.strip_prefix("bearer "))
        {
            return Ok(Credential::Bearer(token.trim().to_owned()));
        }
        let mut cookies = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() == 7 {
                cookies.push((fields[5].to_owned(), fields[6].trim().to_owned()));
            }
        }
        if cookies.is_empty() {
            let line = trimmed
                .strip_prefix("Cookie:")
                .or_else(|| trimmed.strip_prefix("cookie:"))
                .unwrap_or(trimmed);
            for pair in line.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=') {
                    cookies.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
        }
        if cookies.is_empty() {
            bail!(
                "--cookie-file {}: no cookie in it; write `session_token=<value>` (the browser's \
                 session cookie), a cookies.txt, or `Bearer <token>`",
                path.display()
            );
        }
        Ok(Credential::Cookies(cookies))
    }

    fn headers(&self) -> Vec<(String, String)> {
        match self {
            Credential::Cookies(c) => vec![("Cookie".into(), cookie_line(c))],
            Credential::Bearer(t) => vec![("Authorization".into(), format!("Bearer {t}"))],
        }
    }
}

fn cookie_line(cookies: &[(String, String)]) -> String {
    cookies
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where the attempts go.
struct Target {
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Host and port to connect to.
    connect: (String, u16),
    /// The `Host` field.
    authority: String,
}

/// What came back.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the whole body is here (by its length or last chunk).
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The canary's echo, if this is one.
    fn echo(&self) -> Option<Echo> {
        if self.status != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        if v["canary"] != "portcullis" {
            return None;
        }
        Some(Echo(v))
    }

    fn brief(&self) -> String {
        match self.header("location") {
            Some(l) if (300..400).contains(&self.status) => format!("{} to {l}", self.status),
            _ => self.status.to_string(),
        }
    }
}

/// What reached the canary.
struct Echo(Value);

impl Echo {
    fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair.get(0)?.as_str()?, pair.get(1)?.as_str()?)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    fn client(&self) -> &str {
        self.0["client"].as_str().unwrap_or("")
    }
    fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or("")
    }
    fn mode(&self) -> &str {
        self.0["mode"].as_str().unwrap_or("")
    }
}

impl Target {
    fn new(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Target> {
        let parsed = url::Url::parse(url).with_context(|| format!("--live {url}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("--live {url}: no host"))?
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| anyhow!("--live {url}: no port"))?;
        if parsed.path() != "/" || parsed.query().is_some() {
            bail!("--live {url}: give the origin only (such as https://app.example.com)");
        }
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(file) = ca_file {
                    use rustls::pki_types::pem::PemObject as _;
                    let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                        .map_err(|e| anyhow!("--ca-file {}: {e}", file.display()))?;
                    if certs.is_empty() {
                        bail!("--ca-file {}: no certificate in it", file.display());
                    }
                    for cert in certs {
                        roots.add(cert)?;
                    }
                }
                let mut config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            other => bail!("--live {url}: `{other}` is not http or https"),
        };
        let connect_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            tls,
            connect: (connect_host, port),
            authority,
        })
    }

    /// One request, written as given: `target` is sent exactly (encodings and dot
    /// segments kept), `headers` in order (a `Connection` among them replaces the
    /// default `close`, to which it must add `close` itself).
    async fn send(&self, target: &str, headers: &[(String, String)]) -> anyhow::Result<Answer> {
        let mut head = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", self.authority);
        head.push_str("User-Agent: portcullis-check-live\r\nAccept: application/json\r\n");
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
        {
            head.push_str("Connection: close\r\n");
        }
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let exchange = async {
            let tcp = TcpStream::connect((self.connect.0.as_str(), self.connect.1))
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            match &self.tls {
                None => exchange(tcp, head.as_bytes()).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .with_context(|| format!("TLS with {}", self.authority))?;
                    exchange(tls, head.as_bytes()).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer from {} within {TIMEOUT:?}", self.authority))?
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> anyhow::Result<Answer> {
    stream.write_all(request).await?;
    stream.flush().await?;
    // Read until the answer is whole (by its length or its last chunk), or the peer
    // closes; a peer that keeps the connection open despite `close` is not waited for.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify still gave a whole answer.
            Err(_) if !raw.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return parse(&raw);
        }
        raw.extend_from_slice(&buf[..n]);
        if let Ok(answer) = parse(&raw)
            && answer.complete
        {
            return Ok(answer);
        }
    }
}

fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let mut fields = [httparse::EMPTY_HEADER; 96];
    let mut resp = httparse::Response::new(&mut fields);
    let httparse::Status::Complete(len) = resp
        .parse(raw)
        .map_err(|e| anyhow!("the answer is not HTTP: {e}"))?
    else {
        bail!(
            "the connection closed before a whole answer ({} bytes)",
            raw.len()
        );
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code.unwrap_or(0);
    let rest = &raw[len..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let (body, complete) = if chunked {
        (dechunk(rest)?, true)
    } else if let Some(length) = length {
        (
            rest[..rest.len().min(length)].to_vec(),
            rest.len() >= length,
        )
    } else {
        (rest.to_vec(), status == 204 || status == 304)
    };
    Ok(Answer {
        status,
        headers,
        body,
        complete,
    })
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("a chunked answer ends early"))?;
        let size_text = std::str::from_utf8(&rest[..end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("a chunk size is not hex: {size_text:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size {
            bail!("a chunk ends early");
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// How one attempt went.
struct Attempt {
    name: String,
    /// `None`: nothing got through; else what did.
    failure: Option<String>,
    detail: String,
}

#[derive(Default)]
struct Report {
    attempts: Vec<Attempt>,
    json: bool,
}

impl Report {
    fn ok(&mut self, name: &str, detail: impl Into<String>) {
        self.add(name, None, detail.into());
    }
    fn fail(&mut self, name: &str, what: impl Into<String>) {
        self.add(name, Some(what.into()), String::new());
    }
    fn add(&mut self, name: &str, failure: Option<String>, detail: String) {
        if !self.json {
            match &failure {
                None => println!("  ok    {name}: {detail}"),
                Some(what) => println!("  FAIL  {name}: {what}"),
            }
        }
        self.attempts.push(Attempt {
            name: name.to_owned(),
            failure,
            detail,
        });
    }
    fn failures(&self) -> usize {
        self.attempts.iter().filter(|a| a.failure.is_some()).count()
    }
}

pub(crate) struct LiveArgs<'a> {
    pub url: &'a str,
    pub cookie_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub json: bool,
}

/// Exit 0: nothing got through; 1: something did; 2: the check could not be made.
pub(crate) async fn run(args: LiveArgs<'_>) -> ExitCode {
    let mut report = Report {
        json: args.json,
        ..Report::default()
    };
    match probe(&args, &mut report).await {
        Ok(()) => {}
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"result": "not_checked", "error": format!("{e:#}")})
                );
            } else {
                eprintln!("portcullis check --live: {e:#}");
            }
            return ExitCode::from(2);
        }
    }
    let failures = report.failures();
    if args.json {
        let attempts: Vec<Value> = report
            .attempts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "attempt": a.name,
                    "result": if a.failure.is_some() { "got_through" } else { "ok" },
                    "detail": a.failure.as_deref().unwrap_or(&a.detail),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "result": if failures == 0 { "ok" } else { "got_through" },
                "got_through": failures,
                "attempts": attempts,
            })
        );
    } else if failures == 0 {
        println!("{} attempts, none got through.", report.attempts.len());
    } else {
        println!(
            "{} attempts, {failures} got through: fix the set-up before trusting it.",
            report.attempts.len()
        );
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn forged_identity() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = IDENTITY_HEADERS
        .iter()
        .map(|n| ((*n).to_owned(), format!("{FORGED}@{FORGED_HOST}")))
        .collect();
    out.extend(
        IDENTITY_SECRETS
            .iter()
            .map(|n| ((*n).to_owned(), FORGED_SECRET.to_owned())),
    );
    out
}

/// The echoed headers that carry something forged, named.
fn forged_in(echo: &Echo) -> Vec<String> {
    let secret = format!("<{} bytes, not shown>", FORGED_SECRET.len());
    echo.headers()
        .filter(|(_, v)| v.contains(FORGED) || *v == secret)
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

/// A request that must not reach the app: refused (a 4xx or a redirect to log in), never
/// the canary, never a server error.
fn expect_refused(report: &mut Report, name: &str, answer: &anyhow::Result<Answer>) {
    match answer {
        Ok(a) if a.echo().is_some() => report.fail(
            name,
            format!("reached the app without a credential ({})", a.status),
        ),
        Ok(a) if a.status >= 500 => report.fail(
            name,
            format!(
                "a server error ({}): input from outside must get a 4xx",
                a.status
            ),
        ),
        Ok(a) => report.ok(name, format!("refused ({})", a.brief())),
        Err(e) => report.fail(name, format!("no answer: {e:#}")),
    }
}

async fn probe(args: &LiveArgs<'_>, report: &mut Report) -> anyhow::Result<()> {
    let target = Target::new(args.url, args.ca_file)?;
    let credential = args.cookie_file.map(Credential::read).transpose()?;

    // Is this Portcullis, with authentication on, and the canary served?
    let status = target.send("/api/v1/auth/status", &[]).await?;
    let enabled: Value = serde_json::from_slice(&status.body).map_err(|_| {
        anyhow!(
            "{}/api/v1/auth/status did not answer as Portcullis does ({}): is this the URL users reach Portcullis at?",
            args.url,
            status.status
        )
    })?;
    let who = match &credential {
        None => None,
        Some(c) => {
            let me = target.send("/api/v1/auth/me", &c.headers()).await?;
            if me.status != 200 {
                bail!(
                    "the credential in --cookie-file is not accepted ({} from /api/v1/auth/me): sign in again and copy the session cookie",
                    me.status
                );
            }
            Some(serde_json::from_slice::<Value>(&me.body)?)
        }
    };
    if !args.json {
        println!(
            "portcullis check --live {}{}",
            args.url,
            who.as_ref().map_or_else(
                || " (no --cookie-file: only the attempts without a credential, which cannot tell whether the canary is on)".to_owned(),
                |w| format!(
                    " as {}",
                    w["email"]
                        .as_str()
                        .or(w["username"].as_str())
                        .unwrap_or("?")
                )
            )
        );
    }
    if enabled["enabled"] != true {
        report.fail(
            "authentication",
            "off: Portcullis runs in open mode and lets every request through",
        );
    }

    // Without a credential.
    let canary = target.send(CANARY, &[]).await;
    if let Ok(a) = &canary
        && a.status == 404
        && credential.is_none()
    {
        bail!(
            "{CANARY} is not served: set diagnostics.canary=true (and, answering forward-auth, send it to Portcullis; see the README)"
        );
    }
    expect_refused(report, "no credential", &canary);
    let forged = target.send(CANARY, &forged_identity()).await;
    expect_refused(
        report,
        "forged identity headers without a credential",
        &forged,
    );
    encoded_paths(&target, report).await;
    let session_name = match &credential {
        Some(Credential::Cookies(c)) => c[0].0.clone(),
        _ => "session_token".to_owned(),
    };
    malformed_cookies(&target, report, &session_name, credential.as_ref()).await;
    login_redirects(&target, report, credential.as_ref()).await;

    let (Some(credential), Some(who)) = (credential, who) else {
        return Ok(());
    };
    with_credential(&target, report, &credential, &who).await
}

/// Dot segments and encodings of the canary's path, and of a way to it from a public
/// path: each must be refused without a credential.
async fn encoded_paths(target: &Target, report: &mut Report) {
    let variants = [
        "/.well-known/portcullis/canary/",
        "/.well-known/portcullis/./canary",
        "/.well-known/portcullis/x/../canary",
        "/.well-known/portcullis/x/%2e%2e/canary",
        "/.well-known/portcullis%2fcanary",
        "/.well-known/portcullis/%63anary",
        "//.well-known/portcullis/canary",
        "/.well-known/portcullis/canary%00",
        "/.well-known/portcullis/canary;x=1",
        "/.well-known/portcullis/canary/..%2f",
        "/healthz/../.well-known/portcullis/canary",
        "/healthz/..%2f.well-known/portcullis/canary",
        "/api/v1/auth/status/..%2f..%2f..%2f.well-known/portcullis/canary",
        "/api/v1/auth/login/../../../../.well-known/portcullis/canary",
        "/.well-known\\portcullis\\canary",
    ];
    let mut through = Vec::new();
    let mut errors = Vec::new();
    for path in variants {
        match target.send(path, &[]).await {
            Ok(a) if a.echo().is_some() => through.push(path),
            Ok(a) if a.status >= 500 => errors.push(format!("{path} ({})", a.status)),
            Ok(_) => {}
            Err(e) => errors.push(format!("{path} (no answer: {e:#})")),
        }
    }
    let name = "encoded and dot-segment paths without a credential";
    if !through.is_empty() {
        report.fail(name, format!("reached the app: {}", through.join(", ")));
    } else if !errors.is_empty() {
        report.fail(name, format!("server errors: {}", errors.join(", ")));
    } else {
        report.ok(name, format!("{} variants refused", variants.len()));
    }
}

/// Session cookies that are not sessions: refused, never a server error.
async fn malformed_cookies(
    target: &Target,
    report: &mut Report,
    name: &str,
    credential: Option<&Credential>,
) {
    let real = match credential {
        Some(Credential::Cookies(c)) => c[0].1.clone(),
        _ => "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
    };
    let mut flipped = real.clone().into_bytes();
    if let Some(last) = flipped.last_mut() {
        *last = if *last == b'A' { b'B' } else { b'A' };
    }
    let flipped = String::from_utf8(flipped).unwrap_or_default();
    let values = [
        String::new(),
        "garbage".to_owned(),
        {
            let mut truncated = real.clone();
            truncated.pop();
            truncated
        },
        flipped,
        format!("{real}x"),
        "%00%ff".to_owned(),
        "\"\"".to_owned(),
        "A".repeat(4000),
    ];
    let mut through = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let headers = vec![("Cookie".to_owned(), format!("{name}={value}"))];
        match target.send(CANARY, &headers).await {
            Ok(a) if a.echo().is_some() => through.push(i + 1),
            Ok(a) if a.status >= 500 => errors.push(format!("#{} ({})", i + 1, a.status)),
            Ok(_) => {}
            Err(e) => errors.push(format!("#{} (no answer: {e:#})", i + 1)),
        }
    }
    let what = "malformed session cookies (empty, garbage, truncated, altered, extended, encoded, quoted, 4 KB)";
    if !through.is_empty() {
        report.fail(what, format!("reached the app: cookies {through:?}"));
    } else if !errors.is_empty() {
        report.fail(what, format!("server errors: {}", errors.join(", ")));
    } else {
        report.ok(what, format!("{} cookies refused", values.len()));
    }
}

/// Return addresses on another site: the login never sends the browser there.
async fn login_redirects(target: &Target, report: &mut Report, credential: Option<&Credential>) {
    let payloads = [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/%5Cevil.example/",
        "%2F%2Fevil.example/",
        "https:evil.example",
        "/%09/evil.example",
        "javascript:alert(%22evil.example%22)",
    ];
    let mut bad = Vec::new();
    let mut reflected = Vec::new();
    let headers = credential.map(Credential::headers).unwrap_or_default();
    for payload in payloads {
        let path = format!("/api/v1/auth/login?rd={payload}");
        match target.send(&path, &headers).await {
            Ok(a) => {
                if a.status >= 500 {
                    bad.push(format!("rd={payload} ({})", a.status));
                }
                if let Some(location) = a.header("location") {
                    let host = url::Url::parse(location)
                        .ok()
                        .and_then(|u| u.host_str().map(str::to_owned));
                    let relative_escape = location.starts_with("//")
                        || location.starts_with("/\\")
                        || location.starts_with("javascript:");
                    if host.as_deref() == Some(FORGED_HOST) || relative_escape {
                        bad.push(format!("rd={payload} sent the browser to {location}"));
                    }
                }
                if String::from_utf8_lossy(&a.body).contains("alert(\"evil") {
                    reflected.push(payload);
                }
            }
            Err(e) => bad.push(format!("rd={payload} (no answer: {e:#})")),
        }
    }
    let name = "return addresses on another site at the login";
    if !bad.is_empty() {
        report.fail(name, bad.join("; "));
    } else if !reflected.is_empty() {
        report.fail(
            name,
            format!(
                "the page echoes the payload unescaped: {}",
                reflected.join(", ")
            ),
        );
    } else {
        report.ok(
            name,
            format!("{} payloads, none sent the browser away", payloads.len()),
        );
    }
}

async fn with_credential(
    target: &Target,
    report: &mut Report,
    credential: &Credential,
    who: &Value,
) -> anyhow::Result<()> {
    let base = credential.headers();
    let plain = target.send(CANARY, &base).await?;
    let Some(echo) = plain.echo() else {
        if plain.status == 404 || plain.status == 200 {
            // Not found, or the app itself answered.
            bail!(
                "{CANARY} is not served: set diagnostics.canary=true (and, answering forward-auth, send it to Portcullis; see the README)"
            );
        }
        bail!(
            "the signed-in request for {CANARY} did not reach the canary ({}): the test user must be allowed in",
            plain.brief()
        );
    };
    // The identity the app must see is the one Portcullis knows.
    let email = who["email"].as_str().filter(|e| !e.is_empty());
    let user = who["id"].as_str().unwrap_or("");
    let seen = |echo: &Echo| -> Result<(), String> {
        match (email, echo.header("x-forwarded-email")) {
            (Some(want), Some(got)) if got == want => Ok(()),
            (Some(want), got) => Err(format!(
                "X-Forwarded-Email is {got:?}, not the signed-in user's {want:?}"
            )),
            (None, _) => match echo.header("x-forwarded-user") {
                Some(got) if got == user => Ok(()),
                got => Err(format!(
                    "X-Forwarded-User is {got:?}, not the signed-in user's {user:?}"
                )),
            },
        }
    };
    match seen(&echo) {
        Ok(()) => report.ok(
            "the signed-in user",
            format!(
                "reaches the app with the identity Portcullis vouches for ({})",
                echo.mode()
            ),
        ),
        Err(e) => report.fail("the signed-in user", e),
    }
    if echo.mode() == "proxied"
        && let Credential::Cookies(cookies) = credential
        && let Some(cookie) = echo.header("cookie")
        && cookie
            .split("; ")
            .any(|c| c.trim_end_matches("=…") == cookies[0].0)
    {
        report.fail(
            "the session cookie",
            format!("{} reached the app", cookies[0].0),
        );
    }

    // Forged identities beside a real session.
    let mut headers = base.clone();
    headers.extend(forged_identity());
    let spellings = IDENTITY_HEADERS.len() + IDENTITY_SECRETS.len();
    let name = "forged identity headers with a session";
    signed_in_attempt(target, report, name, &headers, |echo| {
        let forged = forged_in(echo);
        if !forged.is_empty() {
            return Err(format!("reached the app: {}", forged.join("; ")));
        }
        seen(echo)?;
        Ok(format!("{spellings} spellings, none reached the app"))
    })
    .await;

    // Identity headers named as hop-by-hop: they must not take the identity away.
    let mut headers = base.clone();
    headers.push((
        "Connection".into(),
        "close, X-Forwarded-Email, X-Forwarded-User, X-Forwarded-Groups, X-Auth-Request-Email"
            .into(),
    ));
    headers.extend(pairs(&[(
        "X-Forwarded-Email",
        "forged-by-portcullis-check@evil.example",
    )]));
    let name = "identity headers named in Connection";
    signed_in_attempt(target, report, name, &headers, |echo| {
        let forged = forged_in(echo);
        if !forged.is_empty() {
            return Err(format!("reached the app: {}", forged.join("; ")));
        }
        seen(echo).map_err(|e| format!("the identity was removed: {e}"))?;
        Ok("the app still gets the identity, and only it".into())
    })
    .await;

    // Forged forwarding headers: the client's address, the host, the path.
    let mut headers = base.clone();
    headers.extend(pairs(&[
        ("X-Forwarded-For", FORGED_IP),
        ("X-Real-IP", FORGED_IP),
        ("True-Client-IP", FORGED_IP),
        ("X-Client-IP", FORGED_IP),
        ("CF-Connecting-IP", FORGED_IP),
        (
            "Forwarded",
            "for=203.0.113.66;host=evil.example;proto=https",
        ),
        ("X-Forwarded-Host", FORGED_HOST),
        ("X-Forwarded-Prefix", "/forged-prefix"),
        ("X-Forwarded-Uri", "/forged-uri"),
        ("X-Original-URL", "/forged-original-url"),
        ("X-Rewrite-URL", "/forged-rewrite-url"),
        ("X-Forwarded-Port", "6666"),
    ]));
    let name = "forged X-Forwarded-*, Forwarded, X-Real-IP, X-Original-URL";
    signed_in_attempt(target, report, name, &headers, |echo| {
        let mut got = Vec::new();
        if echo.client() == FORGED_IP {
            got.push(format!(
                "the app's client address is the forged {FORGED_IP} (a proxy in front passes the client's X-Forwarded-For as its own, or trusted_proxies trusts the client)"
            ));
        }
        if echo.path() != CANARY {
            got.push(format!("the path became {}", echo.path()));
        }
        for (n, v) in echo.headers() {
            let forged_value = v.contains(FORGED_HOST)
                || v.contains("/forged-")
                || v == "6666"
                || (v.contains(FORGED_IP) && !n.eq_ignore_ascii_case("x-forwarded-for"));
            if forged_value {
                got.push(format!("{n}: {v}"));
            }
        }
        if got.is_empty() {
            Ok("none reached the app".into())
        } else {
            Err(format!("reached the app: {}", got.join("; ")))
        }
    })
    .await;
    Ok(())
}

/// One attempt beside the real session: `judge` says what of it reached the canary
/// (`Err`: what got through). A refused signed-in request, or no answer, fails too.
async fn signed_in_attempt(
    target: &Target,
    report: &mut Report,
    name: &str,
    headers: &[(String, String)],
    judge: impl FnOnce(&Echo) -> Result<String, String>,
) {
    match target.send(CANARY, headers).await {
        Ok(a) => match a.echo() {
            Some(echo) => match judge(&echo) {
                Ok(detail) => report.ok(name, detail),
                Err(what) => report.fail(name, what),
            },
            None => report.fail(
                name,
                format!("the signed-in request was refused ({})", a.brief()),
            ),
        },
        Err(e) => report.fail(name, format!("no answer: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_with_and_without_chunks() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
        let a = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, b"abcde");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn credentials_come_as_a_cookie_line_a_cookies_txt_or_a_bearer_token() {
        let dir = std::env::temp_dir().join(format!("live-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c");
        std::fs::write(&file, "Cookie: session_token=abc; other=1\n").unwrap();
        let Credential::Cookies(c) = Credential::read(&file).unwrap() else {
            panic!("cookies")
        };
        assert_eq!(c[0], ("session_token".into(), "abc".into()));
        std::fs::write(
            &file,
            "# Netscape HTTP Cookie File\n#HttpOnly_app.example.com\tFALSE\t/\tTRUE\t0\tsession_token\txyz\n",
        )
        .unwrap();
        let Credential::Cookies(c) = Credential::read(&file).unwrap() else {
            panic!("cookies")
        };
        assert_eq!(c[0], ("session_token".into(), "xyz".into()));
        std::fs::write(&file, "Bearer t0ken\n").unwrap();
        assert!(matches!(Credential::read(&file).unwrap(), Credential::Bearer(t) if t == "t0ken"));
        std::fs::write(&file, "\n").unwrap();
        assert!(Credential::read(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
