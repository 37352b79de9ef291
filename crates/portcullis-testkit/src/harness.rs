//! The harness for end-to-end tests: the real `portcullis` binary as a child process, an
//! upstream that echoes what it received, a browser that keeps cookies and fills in
//! forms, the development provider in-process, and a real third-party OpenID provider
//! (npm `oidc-provider`) as a child process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use url::Url;

pub const SECRET: &str = "test-cookie-secret-0123456789abcdef";

use crate::free_port;

/// The `portcullis` binary the tests run: `PORTCULLIS_BIN`, else the one cargo built
/// beside the running test (`target/<profile>/portcullis`).
pub fn portcullis_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PORTCULLIS_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test knows where it runs");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in target/<profile>/deps");
    profile_dir.join("portcullis")
}

/// Peak resident memory of a process, from /proc (KiB).
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident memory of a process now, from /proc (KiB).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One request header as the echoing upstream reports it.
pub fn echo_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

/// A browser signed in as `user` (with `groups`) through the development provider.
pub async fn logged_in(p: &Portcullis, user: &str, groups: &str) -> Browser {
    let browser = Browser::new();
    let form = browser.navigate(&p.url("/")).await;
    let page = dev_idp_sign_in(&browser, &form, user, groups).await;
    assert_eq!(page.status, 200, "login of {user} failed: {}", page.body);
    browser
}

/// A file of the repository (an example configuration, say), as written.
pub fn example(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .expect("crate lives two levels below the workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------
// Upstream

/// An app behind Portcullis that reports every request it gets as JSON.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into()).boxed()
}

async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    match req.uri().path() {
        "/slow" => {
            let ms = query.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Response::new(full("slow done")))
        }
        "/stream" => {
            // A large body sent in 64 KiB chunks, never held whole.
            let total: usize = query
                .get("bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            let body = ChunkedBody {
                remaining: total,
                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            };
            Ok(Response::new(BodyExt::boxed(body)))
        }
        "/upload" => {
            // How the body was framed on the wire (hyper's parser decoded it) and a digest
            // of what arrived, so a test can compare it with what it sent.
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let framing = json!({
                "transfer-encoding": header("transfer-encoding"),
                "content-length": header("content-length"),
            });
            let mut body = req.into_body();
            let mut received = 0usize;
            let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            while let Some(frame) = body.frame().await {
                if let Ok(Some(data)) = frame.map(|f| f.into_data().ok()) {
                    received += data.len();
                    digest.update(&data);
                }
            }
            let sha256: String = digest
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(Response::new(full(
                json!({"received": received, "sha256": sha256, "framing": framing}).to_string(),
            )))
        }
        "/ws" => Ok(websocket_echo(req)),
        "/close" => {
            // Answers, then closes the connection (as an upstream with a short keep-alive
            // timeout would).
            let mut resp = Response::new(full("closing"));
            resp.headers_mut()
                .insert("connection", "close".parse().unwrap());
            Ok(resp)
        }
        "/set-cookie" => {
            let mut resp = Response::new(full("ok"));
            resp.headers_mut()
                .append("set-cookie", "app=1; Path=/".parse().unwrap());
            resp.headers_mut()
                .append("connection", "x-upstream-hop".parse().unwrap());
            resp.headers_mut()
                .append("x-upstream-hop", "1".parse().unwrap());
            resp.headers_mut()
                .append("keep-alive", "timeout=5".parse().unwrap());
            Ok(resp)
        }
        _ => {
            let mut headers = serde_json::Map::new();
            for (name, value) in req.headers() {
                let entry = headers.entry(name.as_str()).or_insert_with(|| json!([]));
                entry
                    .as_array_mut()
                    .unwrap()
                    .push(json!(String::from_utf8_lossy(value.as_bytes())));
            }
            let body = json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "query": req.uri().query(),
                "version": format!("{:?}", req.version()),
                "peer": peer.to_string(),
                "headers": headers,
            });
            let mut resp = Response::new(full(body.to_string()));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(resp)
        }
    }
}

/// A body of `remaining` bytes, produced one 64 KiB frame at a time.
pub struct ChunkedBody {
    remaining: usize,
    chunk: Bytes,
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.chunk.len().min(self.remaining);
        self.remaining -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }
}

/// Answers a WebSocket handshake (RFC 6455 §4.2.2) and echoes every byte back.
fn websocket_echo(mut req: Request<Incoming>) -> Response<EchoBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let mut input = key;
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let accept =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest.as_ref());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req| echo(peer, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoUpstream { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ---------------------------------------------------------------------------------------
// The portcullis binary

pub struct Portcullis {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct PortcullisBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    port: Option<u16>,
    wait_ready: bool,
}

impl PortcullisBuilder {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Wait for `/readyz` (providers loaded), not just `/healthz`.
    pub fn wait_ready(mut self) -> Self {
        self.wait_ready = true;
        self
    }

    pub async fn start(self) -> Portcullis {
        self.launch(false).await
    }

    /// Starts it serving TLS (health is probed over https without verification).
    pub async fn start_tls(self) -> Portcullis {
        self.launch(true).await
    }

    async fn launch(self, tls: bool) -> Portcullis {
        let port = self.port.unwrap_or_else(free_port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(portcullis_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", addr.to_string())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the portcullis binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        capture(child.stdout.take().unwrap(), output.clone());
        capture(child.stderr.take().unwrap(), output.clone());
        let p = Portcullis {
            child,
            addr,
            output,
        };
        let probe = if self.wait_ready {
            "/readyz"
        } else {
            "/healthz"
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let base = if tls {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        loop {
            if let Ok(r) = http.get(format!("{base}{probe}")).send().await
                && r.status() == 200
            {
                return p;
            }
            if Instant::now() > deadline {
                panic!(
                    "portcullis did not become ready on {addr}; output:\n{}",
                    p.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn capture(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut out = into.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl Portcullis {
    pub fn builder() -> PortcullisBuilder {
        PortcullisBuilder {
            env: Vec::new(),
            args: Vec::new(),
            port: None,
            wait_ready: false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits up to five seconds for a log line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Runs the binary to completion (for `check` and start-up failures).
pub fn run_portcullis(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(portcullis_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("portcullis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------------------
// A browser

#[derive(Debug, Clone)]
struct StoredCookie {
    /// The host that set it, or the `Domain` it was set for.
    host: String,
    /// Sent to subdomains of `host` too (`Domain=` was given).
    domain: bool,
    name: String,
    value: String,
    path: String,
}

impl StoredCookie {
    fn matches(&self, host: &str) -> bool {
        self.host == host || (self.domain && host.ends_with(&format!(".{}", self.host)))
    }
}

/// Just enough of a browser: cookies per host (ignoring the port, as browsers do) or per
/// domain (`Domain=`), redirects, and HTML forms.
pub struct Browser {
    http: reqwest::Client,
    jar: Mutex<Vec<StoredCookie>>,
    pub accept: String,
}

#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// Every URL visited on the way here, with its status.
    pub history: Vec<(String, u16)>,
}

impl Page {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The first form on the page: its absolute action URL and its fields.
    pub fn form(&self) -> (Url, Vec<(String, String)>) {
        let start = self
            .body
            .find("<form")
            .unwrap_or_else(|| panic!("no form on {}: {}", self.url, self.body));
        let end = self.body[start..]
            .find("</form>")
            .map(|e| start + e)
            .unwrap_or(self.body.len());
        let form = &self.body[start..end];
        let tag_end = form.find('>').unwrap();
        let action = attr(&form[..tag_end], "action").unwrap_or_default();
        let action = self.url.join(&action).unwrap();
        let mut fields = Vec::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input") {
            let tag = &rest[i..];
            let close = tag.find('>').unwrap();
            let tag_text = &tag[..close];
            if let Some(name) = attr(tag_text, "name") {
                fields.push((name, attr(tag_text, "value").unwrap_or_default()));
            }
            rest = &tag[close..];
        }
        (action, fields)
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let needle = format!(" {name}={quote}");
        if let Some(i) = tag.find(&needle) {
            let value_start = i + needle.len();
            let value_end = tag[value_start..].find(quote)? + value_start;
            return Some(
                tag[value_start..value_end]
                    .replace("&amp;", "&")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">"),
            );
        }
    }
    None
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self::resolving(&[])
    }

    /// A browser that finds each of `hosts` (say `app1.example.test`) on 127.0.0.1.
    pub fn resolving(hosts: &[&str]) -> Self {
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        for host in hosts {
            // Port 0: the URL's own port is used.
            http = http.resolve(host, ([127, 0, 0, 1], 0).into());
        }
        Browser {
            // Test providers behind TLS use certificates of a throwaway CA.
            http: http.tls_danger_accept_invalid_certs(true).build().unwrap(),
            jar: Mutex::new(Vec::new()),
            accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".into(),
        }
    }

    pub fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.matches(host) && c.name == name)
            .map(|c| c.value.clone())
    }

    pub fn set_cookie(&self, host: &str, name: &str, value: &str) {
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|c| !(c.host == host && c.name == name));
        jar.push(StoredCookie {
            host: host.into(),
            domain: false,
            name: name.into(),
            value: value.into(),
            path: "/".into(),
        });
    }

    pub fn forget_cookies(&self) {
        self.jar.lock().unwrap().clear();
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let jar = self.jar.lock().unwrap();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| c.matches(host) && url.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store(&self, url: &Url, headers: &HeaderMap) {
        let host = url.host_str().unwrap_or("").to_string();
        let mut jar = self.jar.lock().unwrap();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_string();
            let mut expired = false;
            let mut cookie_host = host.clone();
            let mut domain = false;
            for attr in parts {
                let attr = attr.trim();
                if let Some(p) = attr.strip_prefix("Path=") {
                    path = p.to_string();
                }
                if let Some(d) = attr.strip_prefix("Domain=") {
                    let d = d.trim_start_matches('.').to_ascii_lowercase();
                    // RFC 6265 §5.3 step 6: a domain that does not cover the host is ignored.
                    if host != d && !host.ends_with(&format!(".{d}")) {
                        expired = true;
                        continue;
                    }
                    cookie_host = d;
                    domain = true;
                }
                if attr == "Max-Age=0" {
                    expired = true;
                }
            }
            jar.retain(|c| {
                !(c.host == cookie_host
                    && c.domain == domain
                    && c.name == name.trim()
                    && c.path == path)
            });
            if !expired {
                jar.push(StoredCookie {
                    host: cookie_host,
                    domain,
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                    path,
                });
            }
        }
    }

    /// One request, no redirect following.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> Page {
        self.send(method, url, form, &[]).await
    }

    /// A request with extra headers (an `accept` among them replaces the browser's).
    pub async fn request_with(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Page {
        self.send(method, url, None, headers).await
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        form: Option<&[(String, String)]>,
        headers: &[(&str, &str)],
    ) -> Page {
        let url = Url::parse(url).unwrap();
        let mut req = self.http.request(method.parse().unwrap(), url.clone());
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header("accept", &self.accept);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(cookies) = self.cookie_header(&url) {
            req = req.header("cookie", cookies);
        }
        if let Some(fields) = form {
            req = req.form(fields);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.store(&url, &headers);
        let body = resp.text().await.unwrap_or_default();
        Page {
            history: vec![(url.to_string(), status)],
            url,
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        self.request("GET", url, None).await
    }

    /// Follows redirects from `page` until a non-redirect answer.
    pub async fn follow(&self, mut page: Page) -> Page {
        let mut history = std::mem::take(&mut page.history);
        for _ in 0..20 {
            if !(300..400).contains(&page.status) {
                break;
            }
            let location = page.location().expect("a redirect has a Location");
            let next = page.url.join(&location).unwrap();
            page = self.get(next.as_str()).await;
            history.append(&mut page.history);
        }
        page.history = history;
        page
    }

    pub async fn navigate(&self, url: &str) -> Page {
        let page = self.get(url).await;
        self.follow(page).await
    }

    /// Fills in the page's first form (`fill` overrides or adds fields), submits it and
    /// follows the redirects.
    pub async fn submit(&self, page: &Page, fill: &[(&str, &str)]) -> Page {
        let (action, mut fields) = page.form();
        for (name, value) in fill {
            fields.retain(|(n, _)| n != name);
            fields.push((name.to_string(), value.to_string()));
        }
        let mut history = page.history.clone();
        let resp = self.request("POST", action.as_str(), Some(&fields)).await;
        let mut done = self.follow(resp).await;
        history.append(&mut done.history);
        done.history = history;
        done
    }
}

// ---------------------------------------------------------------------------------------
// Identity providers

/// The development provider, in this test process.
pub async fn dev_idp(redirect_uris: Vec<String>) -> portcullis_devidp::DevIdp {
    portcullis_devidp::DevIdp::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![portcullis_devidp::Client {
            id: "portcullis".into(),
            secret: Some("dev-secret".into()),
            redirect_uris,
        }],
    )
    .await
    .unwrap()
}

/// An upstream, the development provider (in this process), and Portcullis configured
/// for them through the flat environment variables only, with its callback at
/// `callback_path`.
pub struct DevSetup {
    pub upstream: EchoUpstream,
    pub idp: portcullis_devidp::DevIdp,
    pub portcullis: Portcullis,
}

pub async fn with_dev_idp_at(callback_path: &str, extra: &[(&str, &str)]) -> DevSetup {
    let upstream = EchoUpstream::start().await;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}{callback_path}");
    let idp = dev_idp(vec![redirect.clone()]).await;
    let mut builder = Portcullis::builder()
        .port(port)
        .env("OAUTH_ENABLED", "true")
        .env("OAUTH_PROVIDER", "oidc")
        .env("OAUTH_ISSUER_URL", idp.issuer())
        .env("OAUTH_CLIENT_ID", "portcullis")
        .env("OAUTH_CLIENT_SECRET", "dev-secret")
        .env("OAUTH_REDIRECT_URL", redirect)
        .env("UPSTREAM_URL", upstream.url())
        .env("COOKIE_SECRET", SECRET);
    for (k, v) in extra {
        builder = builder.env(k, *v);
    }
    let portcullis = builder.wait_ready().start().await;
    DevSetup {
        upstream,
        idp,
        portcullis,
    }
}

pub async fn with_dev_idp(extra: &[(&str, &str)]) -> DevSetup {
    with_dev_idp_at("/api/v1/auth/callback", extra).await
}

/// Submits the development provider's form on `page` as `user` and returns where the
/// provider sends the browser back to (the callback URL with code and state), without
/// following it.
pub async fn callback_url_for(browser: &Browser, page: &Page, user: &str) -> String {
    let (action, mut fields) = page.form();
    fields.push(("username".into(), user.into()));
    let to_callback = browser
        .request("POST", action.as_str(), Some(&fields))
        .await;
    to_callback.location().expect("the provider redirects back")
}

/// Signs in at the development provider's form on `page`.
pub async fn dev_idp_sign_in(browser: &Browser, page: &Page, user: &str, groups: &str) -> Page {
    assert_eq!(
        page.status, 200,
        "expected the dev provider's form at {}",
        page.url
    );
    browser
        .submit(page, &[("username", user), ("groups", groups)])
        .await
}

/// The real third-party provider: npm `oidc-provider`, run by Node.
pub struct OidcProvider {
    child: Child,
    output: Arc<Mutex<String>>,
    pub issuer: String,
    /// Where it listens (plain http), whatever its issuer says.
    pub port: u16,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("oidc-provider output:\n{}", self.logs());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    /// Sends `signal` (`STOP`: it accepts connections and answers nothing, a provider
    /// that hangs; `CONT`: it answers again; `KILL`: it is down).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} oidc-provider");
    }

    /// What it printed (`grant refresh_token` lines, errors).
    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// How many tokens it granted with `grant_type`, once at least `expected` were (or
    /// five seconds passed), after a moment for late ones: its output arrives through a
    /// pipe, behind the HTTP answers.
    pub async fn wait_grants(&self, grant_type: &str, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.grants(grant_type) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.grants(grant_type)
    }

    /// How many tokens it granted with `grant_type` so far.
    pub fn grants(&self, grant_type: &str) -> usize {
        self.logs()
            .lines()
            .filter(|l| *l == format!("grant {grant_type}"))
            .count()
    }

    /// Starts it with one confidential client and the groups of each account.
    pub async fn start(
        client_id: &str,
        client_secret: &str,
        redirect_uris: &[&str],
        groups: Value,
    ) -> OidcProvider {
        Self::start_with(
            client_id,
            client_secret,
            redirect_uris,
            json!({"groups": groups}),
        )
        .await
    }

    /// Starts it with one confidential client; `options` adds `groups`, `accounts` (extra
    /// claims per account) and `idTokenClaims` (see tests/oidc-provider/server.mjs).
    pub async fn start_with(
        client_id: &str,
        client_secret: &str,
        redirect_uris: &[&str],
        options: Value,
    ) -> OidcProvider {
        let dir = workspace_root().join("tests/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test OpenID provider is not installed: run scripts/test (it runs `npm ci` in tests/oidc-provider)"
        );
        let port = free_port();
        let mut config = json!({
            "port": port,
            "clients": [{
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uris": redirect_uris,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }],
        });
        if let (Some(config), Some(options)) = (config.as_object_mut(), options.as_object()) {
            config.extend(options.clone());
        }
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg(config.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let output = Arc::new(Mutex::new(String::new()));
        capture(child.stdout.take().unwrap(), output.clone());
        capture(child.stderr.take().unwrap(), output.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !output.lock().unwrap().contains("listening ") {
            if Instant::now() > deadline {
                panic!("oidc-provider did not start:\n{}", output.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let issuer = options["issuer"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        OidcProvider {
            child,
            output,
            issuer,
            port,
        }
    }
}

/// Signs in at oidc-provider's own login and consent forms.
pub async fn op_sign_in(browser: &Browser, login: &Page, user: &str) -> Page {
    assert!(
        login.body.contains("name=\"login\""),
        "expected oidc-provider's login form at {}: {}",
        login.url,
        login.body
    );
    let consent = browser
        .submit(login, &[("login", user), ("password", "anything")])
        .await;
    if consent.body.contains("name=\"prompt\" value=\"consent\"") {
        browser.submit(&consent, &[]).await
    } else {
        consent
    }
}

/// Signs in at oidc-provider's forms, following redirects until the browser would be
/// sent to `until`; returns that URL.
pub async fn op_sign_in_until(browser: &Browser, start: &str, user: &str, until: &str) -> url::Url {
    let mut page = browser.get(start).await;
    for _ in 0..20 {
        if let Some(location) = page.location() {
            let next = page.url.join(&location).unwrap();
            if next.as_str().starts_with(until) {
                return next;
            }
            page = browser.get(next.as_str()).await;
            continue;
        }
        let (action, mut fields) = page.form();
        if page.body.contains("name=\"login\"") {
            fields.retain(|(k, _)| k != "login" && k != "password");
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "anything".into()));
        }
        page = browser
            .request("POST", action.as_str(), Some(&fields))
            .await;
    }
    panic!("never redirected to {until}: {page:?}");
}

/// Signs in through Portcullis at oidc-provider's forms and lands on the app.
pub async fn op_sign_in_app(browser: &Browser, p: &Portcullis, user: &str) -> Page {
    let back = op_sign_in_until(browser, &p.url("/"), user, &p.url("/api/v1/auth/callback")).await;
    browser.navigate(back.as_str()).await
}
