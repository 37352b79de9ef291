//! The workload a profile-guided build of Portcullis learns from (`scripts/build-pgo`):
//! what a deployment spends its time on, repeated until the counts are steady.
//!
//! It starts an upstream app (in this process), the development provider and Portcullis
//! (the binary named, instrumented for profiling), logs in through the code flow, then
//! sends authenticated requests over keep-alive connections: small and 64 KiB answers,
//! forward-auth checks, a few requests without a session; then the same with twenty
//! routes and the signed identity assertion. Portcullis is stopped with `SIGTERM`, so
//! it writes its profile on the way out.
//!
//! usage: pgo_train <portcullis binary> [requests]
//! The Portcullis processes write their profiles where `PGO_PROFILE_FILE` says (an
//! `LLVM_PROFILE_FILE` pattern), apart from this program's own.

#[path = "support/login.rs"]
mod login;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections the load is spread over: more than one, so the proxy's event loop sees
/// several ready at once, as it does under real load.
const CONNECTIONS: usize = 32;
const CLIENT_ID: &str = "pgo";
const CLIENT_SECRET: &str = "pgo-secret";

/// The processes this program started and has not stopped: `fail` ends them, since
/// exiting runs no destructors (a failed build would otherwise leave them holding ports).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn fail(what: &str) -> ! {
    eprintln!("pgo_train: {what}");
    let running = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
    for pid in running {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
    std::process::exit(1);
}

/// An upstream that answers every request on a connection, keep-alive, with the fields
/// a typical app server sends: `/big` 64 KiB, anything else 100 bytes.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| fail(&format!("upstream: {e}")));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&format!("upstream: {e}")));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(answer(conn));
        }
    });
    addr
}

async fn answer(mut conn: TcpStream) {
    let small = vec![b's'; 100];
    let big = vec![b'b'; 64 * 1024];
    let mut buf = Vec::with_capacity(4096);
    loop {
        // The requests Portcullis sends here have no body: a head ends each.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body = if buf.starts_with(b"GET /big ") {
            &big
        } else {
            &small
        };
        buf.drain(..end);
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: pgo-upstream\r\nDate: {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
            body.len()
        );
        if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(body).await.is_err() {
            return;
        }
    }
}

/// A Portcullis process of `binary`, its output discarded, its profile written as
/// `PGO_PROFILE_FILE` says.
fn start(binary: &Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Ok(pattern) = std::env::var("PGO_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", pattern);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", binary.display())));
    if let Ok(mut running) = RUNNING.lock() {
        running.push(child.id());
    }
    child
}

/// Stops a Portcullis process the way a deployment does, so it exits through `main`
/// (which is when the profile is written). The development provider has no such exit:
/// a signal ends it, and its profile is not wanted.
fn stop(mut child: Child, clean: bool) {
    if let Ok(mut running) = RUNNING.lock() {
        running.retain(|&pid| pid != child.id());
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() || !clean => return,
            Ok(Some(status)) => fail(&format!("Portcullis exited with {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                fail("Portcullis did not stop within 30 s of SIGTERM");
            }
        }
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(resp) = http.get(format!("{base}/readyz")).send().await
            && resp.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail(&format!("{base} was not ready within 30 s"));
}

/// `count` requests of `path`, spread over the connections, each answer read whole.
/// Every answer must have the status expected, or the profile would be of error paths.
async fn load(
    http: &reqwest::Client,
    url: String,
    cookie: Option<&str>,
    count: usize,
    expect: u16,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let (http, url) = (http.clone(), url.clone());
        let cookie = cookie.map(str::to_string);
        let share = count / CONNECTIONS + usize::from(worker < count % CONNECTIONS);
        tasks.spawn(async move {
            for _ in 0..share {
                let mut req = http.get(&url);
                if let Some(c) = &cookie {
                    req = req.header("cookie", c);
                }
                let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
                let status = resp.status().as_u16();
                resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                if status != expect {
                    return Err(format!("{url}: HTTP {status}, expected {expect}"));
                }
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.unwrap_or_else(|e| Err(e.to_string())) {
            fail(&e);
        }
    }
}

/// Twenty routes (nineteen the requests do not match, then the catch-all) and the signed
/// identity assertion, as `bench/proxy.py` configures them.
fn routes_config(dir: &Path) -> PathBuf {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let key = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap_or_else(|e| fail(&format!("key generation: {e}")));
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.as_ref())
    );
    let key_path = dir.join("identity-key.pem");
    let mut yaml = format!(
        "identity_jwt:\n  enabled: true\n  signing_key_file: {}\nroutes:\n",
        key_path.display()
    );
    for i in 0..19 {
        yaml += &format!(
            "  - name: r{i}\n    match: {{path_prefix: /section-{i}, methods: [GET, POST]}}\n    \
             allow: {{groups: [team-{i}], domains: [example.com]}}\n    \
             deny: {{emails: [blocked-{i}@example.com]}}\n"
        );
    }
    yaml += "  - name: everything\n    match: {path_prefix: /}\n    allow: {authenticated: true}\n";
    let config = dir.join("routes.yaml");
    std::fs::write(&key_path, pem)
        .and_then(|()| std::fs::write(&config, yaml))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    config
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(binary) = args.get(1).map(PathBuf::from) else {
        fail("usage: pgo_train <portcullis binary> [requests]");
    };
    let requests: usize = match args.get(2) {
        Some(n) => n.parse().unwrap_or_else(|_| fail("requests: a number")),
        None => 20_000,
    };
    let started = Instant::now();
    let upstream = upstream().await;
    let (port, idp_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let callback = format!("{base}/api/v1/auth/callback");
    let idp = start(
        &binary,
        &[
            "dev-idp",
            "--listen",
            &format!("127.0.0.1:{idp_port}"),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--redirect-uri",
            &callback,
        ],
        &[],
    );
    let env = |extra: Option<&Path>| {
        let mut env = vec![
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("UPSTREAM_URL", format!("http://{upstream}")),
            ("OAUTH_ENABLED", "true".into()),
            ("OAUTH_ISSUER_URL", format!("http://127.0.0.1:{idp_port}")),
            ("OAUTH_CLIENT_ID", CLIENT_ID.into()),
            ("OAUTH_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("OAUTH_REDIRECT_URL", callback.clone()),
            ("COOKIE_SECRET", "pgo-cookie-secret-0123456789abcdef".into()),
            ("LOG_LEVEL", "warn".into()),
            // One worker, as a sidecar with one core has.
            ("SERVER__WORKERS", "1".into()),
        ];
        if let Some(config) = extra {
            env.push(("PORTCULLIS_CONFIG", config.display().to_string()));
        }
        env
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap_or_else(|e| fail(&format!("client: {e}")));

    let dir = std::env::temp_dir().join(format!("portcullis-pgo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    let routes = routes_config(&dir);
    for config in [None, Some(routes.as_path())] {
        let proxy = start(&binary, &[], &env(config));
        wait_ready(&http, &base).await;
        let cookie = login::log_in(&http, &base, "pgo-user")
            .await
            .unwrap_or_else(|e| fail(&format!("login: {e}")));
        let cookie = Some(cookie.as_str());
        if config.is_none() {
            load(&http, format!("{base}/small"), cookie, requests, 200).await;
            load(&http, format!("{base}/big"), cookie, requests / 8, 200).await;
            let verify = format!("{base}/api/v1/auth/verify");
            load(&http, verify, cookie, requests / 4, 200).await;
            // Without a session: refused with 401 (not a browser, so no redirect).
            load(&http, format!("{base}/small"), None, requests / 40, 401).await;
        } else {
            load(&http, format!("{base}/small"), cookie, requests / 2, 200).await;
        }
        stop(proxy, true);
    }
    stop(idp, false);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "pgo_train: {} requests in {:.1} s",
        requests + requests / 8 + requests / 4 + requests / 40 + requests / 2,
        started.elapsed().as_secs_f64()
    );
}
