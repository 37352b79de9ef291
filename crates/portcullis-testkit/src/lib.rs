//! What Portcullis's tests share, compiled once instead of into every test binary.
//!
//! - Real peers, started on free loopback ports and stopped when dropped: `redis-server`
//!   alone or as a three-node Redis Cluster, PostgreSQL, nginx, Caddy, tinyproxy and
//!   Hypercorn, and a test CA. Nothing here is faked: tests talk to the real servers, whose
//!   binaries `scripts/test` installs.
//! - [`harness`]: the `portcullis` binary as a child process, an echoing upstream, a
//!   browser, the development provider, npm `oidc-provider`.
//! - [`fakes`]: in-process stand-ins for the APIs that cannot be reached from a test
//!   machine (GitHub, Microsoft Graph), following their documented shapes.
//! - [`raw`]: HTTP/1.1 over a bare socket, for requests no client library would send.
//!
//! This is test code: `unwrap` on a failure is the test failing.
#![allow(clippy::unwrap_used)]

pub mod fakes;
pub mod harness;
pub mod raw;

/// Everything a test file usually needs.
pub mod prelude {
    pub use crate::harness::*;
    pub use crate::raw::*;
    pub use crate::{TempDir, free_port};
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A port that was free a moment ago and that no other test in this process was given.
///
/// Ports come from below the kernel's ephemeral range: a port handed out there could be
/// taken, before the test's server binds it, by anything binding port 0 (another test's
/// upstream) or by an outgoing connection, and a readiness check would then talk to the
/// wrong server. The kernel never picks a port outside that range by itself.
pub fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let below = ephemeral_low();
    if below < LOWEST + 2_000 {
        return kernel_port(&GIVEN);
    }
    let span = u64::from(below - LOWEST);
    // Each process starts elsewhere in the range, so test binaries run side by side
    // rarely try the same ports.
    let offset = u64::from(std::process::id()).wrapping_mul(2_654_435_761);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + u16::try_from((offset.wrapping_add(n)) % span).expect("in range");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    kernel_port(&GIVEN)
}

/// The ports handed out in this process.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// The lowest port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
}

/// How far a Redis Cluster node's bus port is from its client port.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A free port for a Redis Cluster node whose bus port (10,000 above) is free too,
/// below the ephemeral range (where an outgoing connection could take it) and handed
/// out to nobody else.
fn free_cluster_port() -> u16 {
    const LOWEST: u16 = 10_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let top = ephemeral_low().saturating_sub(CLUSTER_BUS_OFFSET);
    assert!(
        top > LOWEST + 100,
        "no room for Redis Cluster ports below the ephemeral range ({})",
        ephemeral_low()
    );
    let span = u64::from(top - LOWEST);
    let offset = u64::from(std::process::id()).wrapping_mul(2_654_435_761);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + u16::try_from(offset.wrapping_add(n) % span).expect("in range");
        let bus = port + CLUSTER_BUS_OFFSET;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let free = |p: u16| !given.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(bus) {
            given.extend([port, bus]);
            return port;
        }
    }
    panic!("no free pair of ports for a Redis Cluster node and its bus");
}

/// A port the kernel picks (when there is no room below its ephemeral range).
fn kernel_port(given: &std::sync::Mutex<Vec<u16>>) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh directory under the system temp directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "portcullis-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "`{binary}` is not installed: run scripts/test, which installs the test peers"
    );
}

/// Sends one inline command (after AUTH and SELECT when given) and returns the answer.
fn redis_command(port: u16, password: Option<&str>, command: &str) -> std::io::Result<String> {
    redis_command_in(port, password, None, command)
}

fn redis_command_in(
    port: u16,
    password: Option<&str>,
    db: Option<u32>,
    command: &str,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut preamble = Vec::new();
    if let Some(pw) = password {
        preamble.push(format!("AUTH {pw}"));
    }
    if let Some(db) = db {
        preamble.push(format!("SELECT {db}"));
    }
    for line in preamble {
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf)?;
    }
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// A private certificate authority and a server certificate it signed for 127.0.0.1 and
/// localhost, made with `openssl` in a temporary directory.
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    pub fn generate() -> TestCa {
        require("openssl");
        let dir = TempDir::new("ca");
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?} failed");
        };
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=portcullis-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        TestCa { dir }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// How readiness is probed.
enum Probe {
    Plain { password: Option<String> },
    Tls { ca: PathBuf },
}

/// One `redis-server`, persisting to an append-only file in its own directory so that a
/// stop and start keeps its data (as a production Redis would).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    probe: Probe,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[], None)
    }

    /// Starts with extra `redis-server` arguments; `password` is the default user's
    /// password, if the arguments set one (used for readiness probes).
    pub fn start_with(extra: &[&str], password: Option<&str>) -> RedisServer {
        RedisServer::start_on(free_port(), extra, password)
    }

    fn start_on(port: u16, extra: &[&str], password: Option<&str>) -> RedisServer {
        require("redis-server");
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new("redis"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            probe: Probe::Plain {
                password: password.map(str::to_string),
            },
        };
        server.launch();
        server
    }

    /// A server that only speaks TLS, with the certificate `ca` issued.
    pub fn start_tls(ca: &TestCa) -> RedisServer {
        require("redis-server");
        require("redis-cli");
        let port = free_port();
        let path = |p: PathBuf| p.to_str().expect("utf-8 temp path").to_string();
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new("redis-tls"),
            extra: vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(ca.server_cert()),
                "--tls-key-file".into(),
                path(ca.server_key()),
                "--tls-ca-cert-file".into(),
                path(ca.ca_pem()),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            probe: Probe::Tls { ca: ca.ca_pem() },
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let plain_port = match self.probe {
            Probe::Plain { .. } => self.port,
            Probe::Tls { .. } => 0,
        };
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(plain_port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = match &self.probe {
                Probe::Plain { password } => redis_command(self.port, password.as_deref(), "PING")
                    .is_ok_and(|answer| answer.starts_with("+PONG")),
                Probe::Tls { ca } => Command::new("redis-cli")
                    .arg("--tls")
                    .arg("--cacert")
                    .arg(ca)
                    .args(["-p", &self.port.to_string(), "PING"])
                    .output()
                    .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("PONG")),
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs an inline command (plain servers only) and returns the raw answer.
    pub fn command(&self, command: &str) -> String {
        let password = match &self.probe {
            Probe::Plain { password } => password.as_deref(),
            Probe::Tls { .. } => panic!("inline commands are for plain servers"),
        };
        redis_command(self.port, password, command).expect("redis answers")
    }

    /// Runs an inline command in database `db` (plain servers only).
    pub fn command_in(&self, db: u32, command: &str) -> String {
        let password = match &self.probe {
            Probe::Plain { password } => password.as_deref(),
            Probe::Tls { .. } => panic!("inline commands are for plain servers"),
        };
        redis_command_in(self.port, password, Some(db), command).expect("redis answers")
    }

    /// Stops the server (its data is on disk) and waits until the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server at once (`SIGKILL`), as a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Sentinel watching one master, quick to decide (a master is down after one
/// second without an answer; one sentinel is a quorum).
pub struct RedisSentinel {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl RedisSentinel {
    pub fn start(master_name: &str, master_port: u16) -> RedisSentinel {
        require("redis-server");
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_command(port, None, "PING").is_ok_and(|a| a.starts_with("+PONG")) {
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisSentinel {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs an inline command and returns the raw answer.
    pub fn command(&self, command: &str) -> String {
        redis_command(self.port, None, command).expect("the sentinel answers")
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-node Redis Cluster (no replicas), slots spread over the nodes.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        require("redis-cli");
        // Redis runs in its `--dir`, so the cluster state file lands in each node's own
        // temporary directory.
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    free_cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    None,
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            while !node.command("CLUSTER INFO").contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// A PostgreSQL server from Debian's package, in a fresh data directory, on a free port.
/// As root (the database refuses to run as root) it runs as the `postgres` user.
pub struct PostgresServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/test, which installs the test peers")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .expect("a PostgreSQL version under /usr/lib/postgresql")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_postgres(program: PathBuf) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        let dir = TempDir::new("postgres");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand the data directory to postgres"
            );
        }
        let data = dir.path().join("data");
        let status = as_postgres(postgres_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "portcullis", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let mut server = PostgresServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = as_postgres(postgres_bin("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = Command::new(postgres_bin("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "portcullis",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A database URL for a fresh database named `name`.
    pub fn database(&self, name: &str) -> String {
        let status = Command::new(postgres_bin("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "portcullis",
                name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("createdb runs");
        assert!(status.success(), "createdb {name} failed");
        format!("postgres://portcullis@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A fast shutdown through pg_ctl, which signals the server itself (a signal to
            // `runuser` would not reach it).
            let stopped = as_postgres(postgres_bin("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "-t", "20"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Waits until something accepts TCP connections on `port`, or panics naming `what` and
/// its log.
fn wait_listening(port: u16, what: &str, log: &std::path::Path, child: &mut Child) {
    wait_listening_logs(port, what, &[log], child);
}

/// [`wait_listening`] for a server that writes to more than one log.
fn wait_listening_logs(port: u16, what: &str, logs: &[&std::path::Path], child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log: String = logs
                .iter()
                .map(|l| {
                    format!(
                        "{}:\n{}",
                        l.display(),
                        std::fs::read_to_string(l).unwrap_or_default()
                    )
                })
                .collect();
            panic!("{what} did not start listening on port {port} ({exited:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A server process started for a test: stopped when dropped, its temporary directory
/// (configuration, log) removed with it.
struct Daemon {
    child: Child,
    /// Kept alive for as long as the process runs.
    _dir: TempDir,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the server to stop (`SIGTERM`), so that it stops its own workers: nginx's,
    /// when its master is killed outright, live on with no parent, one more after every
    /// test run. A server still running after five seconds is killed.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Real nginx (Debian's package) serving the given `http { }` contents, with every path
/// it writes in a temporary directory.
pub struct Nginx(Daemon);

impl Nginx {
    /// Starts nginx with `server_blocks` inside `http { }`; `port` is one it listens on,
    /// waited for.
    pub fn start(server_blocks: &str, port: u16) -> Nginx {
        require("nginx");
        let dir = TempDir::new("nginx");
        let d = dir.path().display();
        let conf = dir.path().join("nginx.conf");
        let stderr = dir.path().join("stderr.log");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    \
                 proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
                 scgi_temp_path {d}/scgi;\n{server_blocks}\n}}\n"
            ),
        )
        .expect("write nginx.conf");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            // What nginx says before its own log is open (a port it cannot bind) lands
            // here, and in the message if it does not come up.
            .stderr(std::fs::File::create(&stderr).expect("create nginx's stderr.log"))
            .spawn()
            .expect("nginx starts");
        let log = dir.path().join("error.log");
        wait_listening_logs(port, "nginx", &[&stderr, &log], &mut child);
        Nginx(Daemon {
            child,
            _dir: dir,
            log,
        })
    }

    pub fn error_log(&self) -> String {
        self.0.log()
    }
}

/// Real Caddy (Debian's package) running a Caddyfile, its admin API off and its data
/// and config directories in a temporary directory.
pub struct Caddy(Daemon);

impl Caddy {
    /// Starts Caddy on `caddyfile` (site blocks; the global options that keep it
    /// self-contained are prepended); `port` is one it listens on, waited for.
    pub fn start(caddyfile: &str, port: u16) -> Caddy {
        require("caddy");
        let dir = TempDir::new("caddy");
        let file = dir.path().join("Caddyfile");
        std::fs::write(
            &file,
            format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{caddyfile}\n"),
        )
        .expect("write the Caddyfile");
        let log = dir.path().join("caddy.log");
        let out = std::fs::File::create(&log).expect("create the log");
        let mut child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .expect("caddy starts");
        wait_listening(port, "caddy", &log, &mut child);
        Caddy(Daemon {
            child,
            _dir: dir,
            log,
        })
    }

    pub fn log(&self) -> String {
        self.0.log()
    }
}

/// Real tinyproxy (Debian's package): a forward proxy on loopback, logging every
/// connection and request it relays.
pub struct Tinyproxy {
    daemon: Daemon,
    pub port: u16,
}

impl Tinyproxy {
    pub fn start() -> Tinyproxy {
        require("tinyproxy");
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let conf = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT is allowed to every port.
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .expect("write tinyproxy.conf");
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        wait_listening(port, "tinyproxy", &log, &mut child);
        Tinyproxy {
            daemon: Daemon {
                child,
                _dir: dir,
                log,
            },
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Stops the proxy (as when it goes away under a running Portcullis).
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

/// Hypercorn (PyPI, pinned by `tests/h2c/requirements.txt` and installed by
/// `scripts/test` into `tests/h2c/.venv`) serving `tests/h2c/app.py`, an app that echoes
/// what it received. Hypercorn accepts an HTTP/1.1 `Upgrade: h2c` request by switching
/// to HTTP/2, which is what makes it the upstream of the h2c smuggling test.
pub struct Hypercorn {
    _daemon: Daemon,
    pub port: u16,
}

impl Hypercorn {
    pub fn start() -> Hypercorn {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/h2c")
            .canonicalize()
            .expect("tests/h2c exists");
        let bin = root.join(".venv/bin/hypercorn");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test, which installs the test peers",
            bin.display()
        );
        let port = free_port();
        let dir = TempDir::new("hypercorn");
        let log = dir.path().join("hypercorn.log");
        let out = std::fs::File::create(&log).expect("create the log");
        let mut child = Command::new(bin)
            // Served in this one process: a worker process would outlive the kill
            // of its parent when the test ends.
            .args([
                "--workers",
                "0",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "app:app",
            ])
            .current_dir(&root)
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .expect("hypercorn starts");
        wait_listening(port, "hypercorn", &log, &mut child);
        Hypercorn {
            _daemon: Daemon {
                child,
                _dir: dir,
                log,
            },
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The Python interpreter of `tests/grpc/.venv` (installed by `scripts/test`), and that
/// directory.
fn grpc_peers() -> (PathBuf, PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/grpc")
        .canonicalize()
        .expect("tests/grpc exists");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test, which installs the test peers",
        python.display()
    );
    (python, root)
}

/// Envoy's ext_authz client: `tests/grpc/envoy_check.py` sends each case as a
/// `CheckRequest` built with Envoy's generated API (PyPI `xds-protos`) over grpcio, and
/// returns what came back, one JSON value per case.
pub fn envoy_check(addr: &str, cases: &serde_json::Value) -> Vec<serde_json::Value> {
    envoy_check_over(addr, None, cases)
}

/// [`envoy_check`], over TLS trusting `ca` when given.
pub fn envoy_check_over(
    addr: &str,
    ca: Option<&std::path::Path>,
    cases: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let (python, root) = grpc_peers();
    let mut child = Command::new(python)
        .arg(root.join("envoy_check.py"))
        .arg(addr)
        .args(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ext_authz client starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cases.to_string().as_bytes())
        .expect("write the cases");
    let out = child.wait_with_output().expect("the ext_authz client ends");
    assert!(
        out.status.success(),
        "envoy_check.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// An OTLP trace receiver (`tests/grpc/otlp_receiver.py`, on OpenTelemetry's own protobuf
/// messages) listening for HTTP/protobuf on `http_port` and gRPC on `grpc_port`.
pub struct OtlpReceiver {
    daemon: Daemon,
    pub http_port: u16,
    pub grpc_port: u16,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let (python, root) = grpc_peers();
        let (http_port, grpc_port) = (free_port(), free_port());
        let dir = TempDir::new("otlp");
        let log = dir.path().join("spans.jsonl");
        let out = std::fs::File::create(&log).expect("create the log");
        let mut child = Command::new(python)
            .arg(root.join("otlp_receiver.py"))
            .args([http_port.to_string(), grpc_port.to_string()])
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .expect("the OTLP receiver starts");
        wait_listening(http_port, "the OTLP receiver", &log, &mut child);
        wait_listening(grpc_port, "the OTLP receiver (gRPC)", &log, &mut child);
        OtlpReceiver {
            daemon: Daemon {
                child,
                _dir: dir,
                log,
            },
            http_port,
            grpc_port,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.daemon
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The spans of trace `trace_id` once at least `count` have arrived (or after 15 s).
    pub fn wait_for_trace(&self, trace_id: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::{CLUSTER_BUS_OFFSET, GIVEN, ephemeral_low, free_cluster_port, free_port};

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "a port was given twice");
        for port in ports {
            if below >= 12_000 {
                assert!(
                    (10_000..below).contains(&port),
                    "{port} is not below {below}"
                );
            }
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("a given port binds");
        }
    }

    /// A Redis Cluster node also listens 10,000 above its port; a bus port in the
    /// ephemeral range could be taken by an outgoing connection (a CI run's node then
    /// did not start).
    #[test]
    fn cluster_ports_have_a_free_bus_port_below_the_ephemeral_range() {
        if ephemeral_low() < 10_200 + CLUSTER_BUS_OFFSET {
            return;
        }
        for _ in 0..20 {
            let port = free_cluster_port();
            let bus = port + CLUSTER_BUS_OFFSET;
            assert!(
                bus < ephemeral_low(),
                "bus port {bus} in the ephemeral range"
            );
            assert!(
                GIVEN.lock().unwrap().contains(&bus),
                "bus port {bus} not reserved"
            );
            std::net::TcpListener::bind(("127.0.0.1", bus)).expect("the bus port binds");
            assert_ne!(free_port(), bus);
        }
    }
}
