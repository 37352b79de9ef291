#!/usr/bin/env python3
"""Authenticated throughput with sessions in Redis against sessions in memory.

Starts, on loopback: an nginx upstream, a redis-server, the development identity
provider, and two Portcullis instances in front of the upstream that differ only in
their session store (memory, redis). Logs in once through each, then loads both with
wrk, interleaved, same connections and duration, and prints requests/s, p50/p99, CPU
microseconds per request (Portcullis, and Redis separately), the Redis commands each
request cost (from Redis's own INFO commandstats), and the ratio of the two stores.

Targets (issue "Many replicas"): at most one Redis round trip per request, and at least
70% of the memory store's throughput.

Environment: DURATION (seconds, default 10), CONNECTIONS (64), ROUNDS (3),
PORTCULLIS_BIN / LOGIN_FLOOD_BIN (skip the release build).
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CONNECTIONS, DURATION, LOAD_CORE, ROUNDS, SERVER_CORE, SMALL_BODY, build,  # noqa: E402
                    free_port, measure, need, nginx, pinned, proc_cpu_ticks, wait_http, wire_size)
import socket  # noqa: E402


def redis_info(port, section):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            data += chunk
            header, _, rest = data.partition(b"\r\n")
            if header.startswith(b"$") and len(rest) >= int(header[1:]):
                return rest.decode()


def redis_calls(port):
    """Total commands Redis has executed, not counting INFO itself."""
    info = redis_info(port, "commandstats")
    return sum(int(calls) for name, calls in re.findall(r"cmdstat_(\w+):calls=(\d+)", info) if name != "info")


def main():
    need("nginx", "nginx")
    need("wrk", "wrk")
    need("redis-server", "redis-server")
    portcullis, flood = build()
    work = tempfile.mkdtemp(prefix="portcullis-bench-sessions-")
    os.chmod(work, 0o755)
    procs = []
    try:
        up, redis_port, idp_port, mem_port, red_port = (free_port() for _ in range(5))
        procs.append(nginx(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{up};
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}
    }}"""))
        redis = subprocess.Popen(pinned(SERVER_CORE, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                                       "--save", "", "--appendonly", "no", "--dir", work]),
                                 stdout=subprocess.DEVNULL)
        procs.append(redis)
        wait_http(f"http://127.0.0.1:{up}/small")
        callbacks = [f"http://127.0.0.1:{p}/api/v1/auth/callback" for p in (mem_port, red_port)]
        idp_args = [portcullis, "dev-idp", "--listen", f"127.0.0.1:{idp_port}", "--client-id", "bench",
                    "--client-secret", "bench-secret"]
        for cb in callbacks:
            idp_args += ["--redirect-uri", cb]
        procs.append(subprocess.Popen(pinned(SERVER_CORE, idp_args), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))

        def start(port, store_env):
            env = {
                "PATH": os.environ["PATH"],
                "LISTEN_ADDR": f"127.0.0.1:{port}",
                "UPSTREAM_URL": f"http://127.0.0.1:{up}",
                "OAUTH_ENABLED": "true",
                "OAUTH_ISSUER_URL": f"http://127.0.0.1:{idp_port}",
                "OAUTH_CLIENT_ID": "bench",
                "OAUTH_CLIENT_SECRET": "bench-secret",
                "OAUTH_REDIRECT_URL": f"http://127.0.0.1:{port}/api/v1/auth/callback",
                "COOKIE_SECRET": "bench-cookie-secret-0123456789abcdef",
                "LOG_LEVEL": "warn",
                **store_env,
            }
            proc = subprocess.Popen(pinned(SERVER_CORE, [portcullis]), env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(work, f"portcullis-{port}.log"), "w"))
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/readyz")
            cookie = subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{port}/", "1", "1"]),
                                    capture_output=True, text=True, check=True).stdout.strip()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/small", headers={"Cookie": cookie})
            with urllib.request.urlopen(req) as r:
                assert r.status == 200 and r.read().decode() == SMALL_BODY
            return proc, cookie

        mem_proc, mem_cookie = start(mem_port, {"SESSION__STORE": "memory"})
        red_proc, red_cookie = start(red_port, {"SESSION__STORE": "redis",
                                                "SESSION__REDIS__URL": f"redis://127.0.0.1:{redis_port}"})
        targets = {
            "memory": (mem_port, mem_cookie, [mem_proc.pid]),
            "redis": (red_port, red_cookie, [red_proc.pid]),
        }
        expected = {name: wire_size(port, "/small", cookie) for name, (port, cookie, _) in targets.items()}
        rows = {"memory": [], "redis": []}
        print(f"wrk: 1 thread, {CONNECTIONS} connections, {DURATION}s per run, {ROUNDS} interleaved rounds; "
              f"wrk on core {LOAD_CORE}, Portcullis, Redis and the upstream on core {SERVER_CORE}", flush=True)
        for rnd in range(ROUNDS):
            for name, (port, cookie, pids) in targets.items():
                calls_before = redis_calls(redis_port)
                redis_before = proc_cpu_ticks([redis.pid])
                r = measure(name, f"http://127.0.0.1:{port}/small", cookie, pids, expected[name])
                r["redis_calls"] = (redis_calls(redis_port) - calls_before) / r["requests"]
                r["redis_cpu_us"] = ((proc_cpu_ticks([redis.pid]) - redis_before) / os.sysconf("SC_CLK_TCK")
                                     * 1e6 / r["requests"])
                rows[name].append(r)
                print(f"  round {rnd + 1} {name:7} {r['rps']:>9.0f} req/s  p99 {r['p99']:.2f} ms  "
                      f"redis commands/request {r['redis_calls']:.3f}", flush=True)

        def med(name, key):
            return statistics.median(r[key] for r in rows[name])

        print()
        print(f"{'store':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'Redis CPU us/req':>18}"
              f"{'Redis cmds/req':>16}")
        for name in ("memory", "redis"):
            print(f"{name:<9}{med(name, 'rps'):>9.0f}{med(name, 'p50'):>9.2f}{med(name, 'p99'):>9.2f}"
                  f"{med(name, 'cpu_us'):>12.1f}{med(name, 'redis_cpu_us'):>18.1f}{med(name, 'redis_calls'):>16.3f}")
        print()
        ratio = med("redis", "rps") / med("memory", "rps")
        print(f"redis / memory throughput {ratio:.2f}x (target >= 0.70); "
              f"p99 {med('redis', 'p99') / med('memory', 'p99'):.2f}x; "
              f"Redis round trips per request {med('redis', 'redis_calls'):.3f} (target <= 1)")
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
