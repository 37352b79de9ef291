#!/usr/bin/env python3
"""Authenticated Portcullis against nginx as a plain reverse proxy.

Starts, on loopback:
  - an upstream: nginx returning a small fixed body (/small) and a 64 KiB file (/big);
  - nginx as a plain reverse proxy in front of it (no auth: the practical ceiling);
  - the development identity provider (`portcullis dev-idp`) and Portcullis in front of
    the upstream, with a session created by a real login;
then loads both proxies with wrk, interleaved, with the same connections and duration,
and prints requests/s, p50/p99 latency, CPU microseconds per request and peak RSS for
each row, Portcullis's ratios to nginx, Portcullis's idle RSS, and its RSS once it
holds SESSIONS live sessions (created by real logins, then loaded again).

On a 2-core machine the load generator is pinned to core 0 and every server to core 1,
so wrk does not steal the proxies' CPU.

Environment: DURATION (seconds, default 10), CONNECTIONS (64), ROUNDS (3),
SESSIONS (100000), PORTCULLIS_BIN / LOGIN_FLOOD_BIN (skip the release build).
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SESSIONS = int(os.environ.get("SESSIONS", "100000"))
LOAD_CORE, SERVER_CORE = "0", "1" if os.cpu_count() and os.cpu_count() > 1 else "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMALL_BODY = "hello from the upstream\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool, package):
    if shutil.which(tool):
        return
    print(f"installing {package} (for {tool})", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def build():
    binary = os.environ.get("PORTCULLIS_BIN")
    flood = os.environ.get("LOGIN_FLOOD_BIN")
    if binary and flood:
        return binary, flood
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "portcullis", "--bin", "portcullis",
                    "--example", "login_flood"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "portcullis"), os.path.join(target, "release", "examples", "login_flood")


def pinned(core, argv):
    return ["taskset", "-c", core] + argv


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def proc_cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    return 0


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def nginx(work, name, server_block):
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    fastcgi_temp_path {work}/{name}-fastcgi;
    uwsgi_temp_path {work}/{name}-uwsgi;
    scgi_temp_path {work}/{name}-scgi;
    {server_block}
}}
""")
    proc = subprocess.Popen(pinned(SERVER_CORE, ["nginx", "-p", work, "-c", conf]))
    return proc


def parse_size(text):
    number, unit = re.match(r"([\d.]+)([KMGT]?B)", text).groups()
    return float(number) * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}[unit]


def parse_latency(text):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url, cookie):
    out = subprocess.run(pinned(LOAD_CORE, ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency",
                                            "-H", f"Cookie: {cookie}", url]),
                         capture_output=True, text=True, check=True).stdout
    result = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", out)
    result["requests"] = int(m.group(1))
    result["bytes"] = parse_size(m.group(4))
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "99"):
        result[f"p{pct}"] = parse_latency(re.search(rf"\s{pct}%\s+([\d.]+\w+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(bad.group(1)) if bad else 0
    result["raw"] = out
    return result


def wire_size(port, path, cookie):
    """The exact size of one 200 response (status line, headers, body) on the wire."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"port {port} {path}: expected a 200, got {head.splitlines()[0]!r}")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(65536)
        return len(head) + 4 + length


def measure(label, url, cookie, pids, expected_bytes):
    before = proc_cpu_ticks(pids)
    r = run_wrk(url, cookie)
    after = proc_cpu_ticks(pids)
    r["cpu_us"] = (after - before) / CLK_TCK * 1e6 / max(r["requests"], 1)
    per_response = r["bytes"] / max(r["requests"], 1)
    # wrk counts redirects as successes, so a lost session would look like a speed-up (or,
    # for a small body, a slow-down): every response must be the size of a real 200. wrk
    # rounds its byte count, hence the tolerance; a redirect differs by far more.
    if r["non2xx"] or abs(per_response - expected_bytes) > 0.05 * expected_bytes:
        print(r["raw"], file=sys.stderr)
        raise SystemExit(f"{label} {url}: {r['non2xx']} non-2xx, {per_response:.0f} bytes per response "
                         f"where a 200 is {expected_bytes}: not a clean run")
    return r


def main():
    need("nginx", "nginx")
    need("wrk", "wrk")
    need("taskset", "util-linux")
    portcullis, flood = build()
    work = tempfile.mkdtemp(prefix="portcullis-bench-")
    procs = []
    try:
        # nginx workers run as an unprivileged user: they must be able to read the file.
        os.chmod(work, 0o755)
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(64 * 1024))
        os.chmod(big, 0o644)
        up, ngx, idp_port, pc = free_port(), free_port(), free_port(), free_port()
        procs.append(nginx(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{up};
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}
        location = /big {{ alias {big}; default_type application/octet-stream; }}
    }}"""))
        procs.append(nginx(work, "proxy", f"""
    upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ngx};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}"""))
        wait_http(f"http://127.0.0.1:{up}/small")
        wait_http(f"http://127.0.0.1:{ngx}/small")

        callback = f"http://127.0.0.1:{pc}/api/v1/auth/callback"
        procs.append(subprocess.Popen(pinned(SERVER_CORE, [portcullis, "dev-idp", "--listen", f"127.0.0.1:{idp_port}",
                                                           "--client-id", "bench", "--client-secret", "bench-secret",
                                                           "--redirect-uri", callback]),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = {
            "PATH": os.environ["PATH"],
            "LISTEN_ADDR": f"127.0.0.1:{pc}",
            "UPSTREAM_URL": f"http://127.0.0.1:{up}",
            "OAUTH_ENABLED": "true",
            "OAUTH_ISSUER_URL": f"http://127.0.0.1:{idp_port}",
            "OAUTH_CLIENT_ID": "bench",
            "OAUTH_CLIENT_SECRET": "bench-secret",
            "OAUTH_REDIRECT_URL": callback,
            "COOKIE_SECRET": "bench-cookie-secret-0123456789abcdef",
            "SESSION__MAX_SESSIONS": str(max(SESSIONS * 2, 1000)),
            "LOG_LEVEL": "warn",
        }
        pc_proc = subprocess.Popen(pinned(SERVER_CORE, [portcullis]), env=env, stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(work, "portcullis.log"), "w"))
        procs.append(pc_proc)
        wait_http(f"http://127.0.0.1:{pc}/readyz")

        cookie = subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{pc}/", "1", "1"]),
                                capture_output=True, text=True, check=True).stdout.strip()
        req = urllib.request.Request(f"http://127.0.0.1:{pc}/small", headers={"Cookie": cookie})
        with urllib.request.urlopen(req) as r:
            assert r.status == 200 and r.read().decode() == SMALL_BODY, "the session does not reach the upstream"
        idle_rss = proc_status(pc_proc.pid, "VmRSS")

        nginx_pids = [procs[1].pid] + children(procs[1].pid)
        rows = {}
        expected = {(name, path): wire_size(port, "/" + path, cookie)
                    for name, port in (("nginx", ngx), ("portcullis", pc)) for path in ("small", "big")}
        print(f"wrk: 1 thread, {CONNECTIONS} connections, {DURATION}s per run, {ROUNDS} interleaved rounds; "
              f"wrk on core {LOAD_CORE}, servers on core {SERVER_CORE}", flush=True)
        for rnd in range(ROUNDS):
            for path in ("small", "big"):
                for name, port, pids in (("nginx", ngx, nginx_pids), ("portcullis", pc, [pc_proc.pid])):
                    r = measure(name, f"http://127.0.0.1:{port}/{path}", cookie, pids, expected[(name, path)])
                    rows.setdefault((name, path), []).append(r)
                    print(f"  round {rnd + 1} {name:10} /{path:5} {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms",
                          flush=True)

        def med(name, path, key):
            return statistics.median(r[key] for r in rows[(name, path)])

        print()
        print(f"{'proxy':<12}{'path':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'peak RSS MiB':>14}")
        peaks = {"nginx": max(proc_status(p, "VmHWM") for p in nginx_pids), "portcullis": proc_status(pc_proc.pid, "VmHWM")}
        for path in ("small", "big"):
            for name in ("nginx", "portcullis"):
                print(f"{name:<12}{'/' + path:<8}{med(name, path, 'rps'):>10.0f}{med(name, path, 'p50'):>9.2f}"
                      f"{med(name, path, 'p99'):>9.2f}{med(name, path, 'cpu_us'):>12.1f}{peaks[name] / 1024:>14.1f}")
        print()
        for path in ("small", "big"):
            tput = med("portcullis", path, "rps") / med("nginx", path, "rps")
            p99 = med("portcullis", path, "p99") / med("nginx", path, "p99")
            print(f"portcullis / nginx  /{path:<6} throughput {tput:.2f}x (target >= 0.80), p99 {p99:.2f}x (target <= 1.50)")
        print(f"portcullis idle RSS (one session): {idle_rss / 1024:.1f} MiB (target < 20)")

        if SESSIONS > 0:
            started = time.time()
            subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{pc}/", str(SESSIONS), "64"]),
                           check=True, stdout=subprocess.DEVNULL)
            took = time.time() - started
            held = proc_status(pc_proc.pid, "VmRSS")
            print(f"portcullis RSS with {SESSIONS} live sessions (each from a real login, {took:.0f}s to create): "
                  f"{held / 1024:.1f} MiB (target < 150)")
            r = measure("portcullis", f"http://127.0.0.1:{pc}/small", cookie, [pc_proc.pid],
                        expected[("portcullis", "small")])
            print(f"portcullis /small with {SESSIONS} sessions held: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
