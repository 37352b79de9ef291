"""Shared pieces of the benchmarks: servers pinned to cores, wrk runs checked for clean
200s, CPU and memory accounting from /proc, release binaries."""

import os
import re
import shutil
import socket
import subprocess
import sys
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
    # The build that ships: profile-guided (scripts/build-pgo), for this machine's target.
    subprocess.run(["scripts/build-pgo", "-p", "portcullis", "--bin", "portcullis", "--example", "login_flood"],
                   cwd=ROOT, check=True)
    host = [line.split(": ", 1)[1] for line in subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                               check=True).stdout.splitlines()
            if line.startswith("host: ")][0]
    out = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), host, "release")
    return os.path.join(out, "portcullis"), os.path.join(out, "examples", "login_flood")


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


def proc_cpu_ticks(pids, user_only=False):
    """CPU clock ticks of `pids` so far: user and system time, or user time alone."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + (0 if user_only else int(fields[12]))  # utime + stime
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


def nginx(work, name, server_block, wrap=()):
    """nginx serving `server_block`, pinned to the server core; `wrap` runs it under
    another program (valgrind), in one process without a master."""
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""
{"master_process off;" if wrap else ""}
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
    proc = subprocess.Popen(pinned(SERVER_CORE, [*wrap, "nginx", "-p", work, "-c", conf]))
    return proc


def parse_size(text):
    number, unit = re.match(r"([\d.]+)([KMGT]?B)", text).groups()
    return float(number) * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}[unit]


def parse_latency(text):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(url, cookie, connections=None):
    out = subprocess.run(pinned(LOAD_CORE, ["wrk", "-t1", f"-c{connections or CONNECTIONS}", f"-d{DURATION}s", "--latency",
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
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
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


def core_ticks(core):
    """(steal, all) ticks of CPU `core` from /proc/stat: the time the hypervisor gave
    this virtual CPU's turn to another guest, and all time."""
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == f"cpu{core}":
                # user nice system idle iowait irq softirq steal (guest time is in user)
                ticks = [int(v) for v in fields[1:9]]
                return ticks[7], sum(ticks)
    return 0, 0


def measure(label, url, cookie, pids, expected_bytes, connections=None, extra_pids=(), socket_errors_ok=False):
    """One wrk run; `cpu_us` is the CPU time of `pids` per request (`user_us` its user
    time alone), `extra_cpu_us` that of `extra_pids` (another process in the chain,
    measured in the same run), `steal` the share of the servers' core the hypervisor
    gave to other guests during the run (a run with much of it measured a slower
    machine). `socket_errors_ok`: socket errors (wrk's timeouts) are reported in the
    result, not refused (for the reference proxy, whose errors are a figure, not a fault
    of the run); wrong answers are refused all the same."""
    before, extra_before = proc_cpu_ticks(pids), proc_cpu_ticks(extra_pids)
    user_before = proc_cpu_ticks(pids, user_only=True)
    steal_before, all_before = core_ticks(SERVER_CORE)
    r = run_wrk(url, cookie, connections)
    after, extra_after = proc_cpu_ticks(pids), proc_cpu_ticks(extra_pids)
    user_after = proc_cpu_ticks(pids, user_only=True)
    steal_after, all_after = core_ticks(SERVER_CORE)
    r["steal"] = (steal_after - steal_before) / max(all_after - all_before, 1)
    r["cpu_us"] = (after - before) / CLK_TCK * 1e6 / max(r["requests"], 1)
    # The kernel's share (the same system calls for both proxies) hides where they differ.
    r["user_us"] = (user_after - user_before) / CLK_TCK * 1e6 / max(r["requests"], 1)
    r["extra_cpu_us"] = (extra_after - extra_before) / CLK_TCK * 1e6 / max(r["requests"], 1)
    per_response = r["bytes"] / max(r["requests"], 1)
    # wrk counts redirects as successes, so a lost session would look like a speed-up (or,
    # for a small body, a slow-down): every response must be the size of a real 200. wrk
    # rounds its byte count, hence the tolerance; a redirect differs by far more.
    socket_errors = r["socket_errors"] and not socket_errors_ok
    if r["non2xx"] or socket_errors or abs(per_response - expected_bytes) > 0.05 * expected_bytes:
        print(r["raw"], file=sys.stderr)
        raise SystemExit(f"{label} {url}: {r['non2xx']} non-2xx, {r['socket_errors']} socket errors, "
                         f"{per_response:.0f} bytes per response "
                         f"where a 200 is {expected_bytes}: not a clean run")
    return r




def postgres_bin(name):
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    return os.path.join("/usr/lib/postgresql", versions[-1], "bin", name)


class Postgres:
    """A throwaway PostgreSQL server from Debian's package on a free loopback port, with
    its default durability settings (fsync on): the figures are those of a real server."""

    def __init__(self, work, core):
        if not os.path.isdir("/usr/lib/postgresql"):
            need("pg_ctlcluster", "postgresql")
        self.dir = os.path.join(work, "postgres")
        os.makedirs(self.dir)
        self.port = free_port()
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_pg:
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        self.as_pg = as_pg
        subprocess.run(as_pg + [postgres_bin("initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "portcullis",
                                "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(pinned(core, as_pg + [postgres_bin("postgres"), "-D", f"{self.dir}/data",
                                                           "-p", str(self.port), "-k", self.dir,
                                                           "-c", "listen_addresses=127.0.0.1"]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while subprocess.run([postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             stdout=subprocess.DEVNULL).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("postgres did not start")
            time.sleep(0.1)

    def database(self, name):
        subprocess.run([postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "portcullis", name],
                       check=True)
        return f"postgres://portcullis@127.0.0.1:{self.port}/{name}"

    def stop(self):
        subprocess.run(self.as_pg + [postgres_bin("pg_ctl"), "stop", "-D", f"{self.dir}/data", "-m", "fast", "-w"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc.wait(timeout=30)
