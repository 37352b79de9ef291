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
holds SESSIONS live sessions (created by real logins, then loaded again), and the RSS
of a fresh Portcullis after the same number of logins and nothing else.

On a 2-core machine the load generator is pinned to core 0 and every server to core 1,
so wrk does not steal the proxies' CPU.

A "fwd-auth" row puts nginx in front of the upstream asking Portcullis about every request
(auth_request to /api/v1/auth/verify): requests per second through the pair, nginx's CPU
per request and Portcullis's CPU per check.

Every nginx proxy holds a 64 KiB answer in memory (proxy_buffers 16 8k): with its
defaults it would spool /big through a temporary file and look slower than it can be.
After the rounds, both proxies are loaded with 1,000 keep-alive connections.

A third row, "routes", is Portcullis with a table of 20 routes (the measured paths fall
through 19 of them to the catch-all) and the signed identity assertion on: the cost of
per-route policy and of the assertion, against the plain row. A fourth, "traced", is the
plain set-up exporting OpenTelemetry traces with a 1% sampler (OTLP/HTTP to a sink in
this script): the cost of tracing, against the plain row, which has it off.

Environment: DURATION (seconds, default 10), CONNECTIONS (64), ROUNDS (3),
SESSIONS (100000), PORTCULLIS_BIN / LOGIN_FLOOD_BIN (skip the release build).
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CONNECTIONS, DURATION, LOAD_CORE, ROUNDS, SERVER_CORE, SESSIONS, SMALL_BODY, build,  # noqa: E402
                    children, free_port, measure, need, nginx, pinned, proc_status, wait_http, wire_size)


def routes_yaml(key):
    """Twenty routes: nineteen the measured paths do not match (so each request is
    checked against them first), then the catch-all; and the identity assertion."""
    lines = ["identity_jwt:", "  enabled: true", f"  signing_key_file: {key}", "routes:"]
    for i in range(19):
        lines += [f"  - name: r{i}", f"    match: {{path_prefix: /section-{i}, methods: [GET, POST]}}",
                  f"    allow: {{groups: [team-{i}], domains: [example.com]}}",
                  f"    deny: {{emails: [blocked-{i}@example.com]}}"]
    lines += ["  - name: everything", "    match: {path_prefix: /}", "    allow: {authenticated: true}"]
    return "\n".join(lines) + "\n"


def otlp_sink():
    """An OTLP/HTTP endpoint that accepts every export and counts it (and, roughly, its
    spans: each span of an ExportTraceServiceRequest carries a 16-byte trace id field)."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            self.server.exports += 1
            self.server.spans += body.count(b"\x0a\x10")
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.exports = 0
    server.spans = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    need("nginx", "nginx")
    need("wrk", "wrk")
    need("openssl", "openssl")
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
        # nginx at its best for both bodies: its default 8 x 4 KiB proxy buffers send a
        # 64 KiB answer through a temporary file (46-56 CPU us per request here); 16 x 8 KiB
        # hold it in memory (33-40 us). Buffering off is worse still (8 KiB reads: 77-94 us).
        nginx_proxy = """
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffers 16 8k;"""
        procs.append(nginx(work, "proxy", f"""
    upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ngx};
        location / {{ {nginx_proxy} }}
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

        # Forward-auth: nginx in front of the upstream asks Portcullis about every request
        # (auth_request: one subrequest to /api/v1/auth/verify over a keep-alive pool).
        fa = free_port()
        procs.append(nginx(work, "forward-auth", f"""
    upstream app {{ server 127.0.0.1:{up}; keepalive 64; }}
    upstream portcullis {{ server 127.0.0.1:{pc}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{fa};
        location = /_portcullis {{
            internal;
            proxy_pass http://portcullis/api/v1/auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}
        location / {{
            auth_request /_portcullis;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $email $upstream_http_x_auth_request_email;
            proxy_set_header X-Forwarded-User $user;
            proxy_set_header X-Forwarded-Email $email;
            {nginx_proxy}
        }}
    }}"""))
        fa_check = urllib.request.Request(f"http://127.0.0.1:{fa}/small", headers={"Cookie": cookie})
        for _ in range(200):
            try:
                with urllib.request.urlopen(fa_check) as r:
                    assert r.status == 200 and r.read().decode() == SMALL_BODY, "forward-auth does not pass the session"
                break
            except OSError:
                time.sleep(0.05)

        def variant(label, extra_env):
            """Another Portcullis (with its own dev-idp) on its own port: its port, process
            and session cookie."""
            port, idp = free_port(), free_port()
            callback_url = f"http://127.0.0.1:{port}/api/v1/auth/callback"
            procs.append(subprocess.Popen(pinned(SERVER_CORE, [portcullis, "dev-idp", "--listen", f"127.0.0.1:{idp}",
                                                               "--client-id", "bench", "--client-secret", "bench-secret",
                                                               "--redirect-uri", callback_url]),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            variant_env = dict(env, LISTEN_ADDR=f"127.0.0.1:{port}", OAUTH_ISSUER_URL=f"http://127.0.0.1:{idp}",
                               OAUTH_REDIRECT_URL=callback_url, **extra_env)
            proc = subprocess.Popen(pinned(SERVER_CORE, [portcullis]), env=variant_env, stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(work, f"{label}.log"), "w"))
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/readyz")
            variant_cookie = subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{port}/", "1", "1"]),
                                            capture_output=True, text=True, check=True).stdout.strip()
            probe = urllib.request.Request(f"http://127.0.0.1:{port}/small", headers={"Cookie": variant_cookie})
            with urllib.request.urlopen(probe) as r:
                assert r.status == 200 and r.read().decode() == SMALL_BODY, f"the {label} row does not reach the upstream"
            return port, proc, variant_cookie

        # The same with 20 routes and the identity assertion.
        key = os.path.join(work, "identity-key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", key], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(work, "routes.yaml"), "w") as f:
            f.write(routes_yaml(key))
        rt, rt_proc, rt_cookie = variant("routes", {"PORTCULLIS_CONFIG": os.path.join(work, "routes.yaml")})

        # The plain set-up exporting OpenTelemetry traces of 1% of the requests (OTLP over
        # HTTP to a sink in this script that counts what arrives).
        sink = otlp_sink()
        tr, tr_proc, tr_cookie = variant("traced", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        })

        nginx_pids = [procs[1].pid] + children(procs[1].pid)
        fa_proc = next(p for p in procs if p.args[-1].endswith("forward-auth.conf"))
        fa_pids = [fa_proc.pid] + children(fa_proc.pid)
        rows = {}
        targets = (("nginx", ngx, nginx_pids, cookie), ("portcullis", pc, [pc_proc.pid], cookie),
                   ("routes", rt, [rt_proc.pid], rt_cookie), ("traced", tr, [tr_proc.pid], tr_cookie))
        expected = {(name, path): wire_size(port, "/" + path, c)
                    for name, port, _, c in targets for path in ("small", "big")}
        expected.update({("forward-auth", path): wire_size(fa, "/" + path, cookie) for path in ("small", "big")})
        print(f"wrk: 1 thread, {CONNECTIONS} connections, {DURATION}s per run, {ROUNDS} interleaved rounds; "
              f"wrk on core {LOAD_CORE}, servers on core {SERVER_CORE}", flush=True)
        for rnd in range(ROUNDS):
            for path in ("small", "big"):
                for name, port, pids, c in targets:
                    r = measure(name, f"http://127.0.0.1:{port}/{path}", c, pids, expected[(name, path)])
                    rows.setdefault((name, path), []).append(r)
                    print(f"  round {rnd + 1} {name:10} /{path:5} {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms  "
                          f"steal {100 * r['steal']:.1f}%", flush=True)
                r = measure("forward-auth", f"http://127.0.0.1:{fa}/{path}", cookie, fa_pids,
                            expected[("forward-auth", path)], extra_pids=[pc_proc.pid])
                rows.setdefault(("forward-auth", path), []).append(r)
                print(f"  round {rnd + 1} {'fwd-auth':10} /{path:5} {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms  "
                      f"(nginx {r['cpu_us']:.1f} + portcullis {r['extra_cpu_us']:.1f} CPU us)  "
                      f"steal {100 * r['steal']:.1f}%", flush=True)

        def med(name, path, key):
            return statistics.median(r[key] for r in rows[(name, path)])

        print()
        print(f"{'proxy':<12}{'path':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'user us':>9}"
              f"{'peak RSS MiB':>14}")
        peaks = {"nginx": max(proc_status(p, "VmHWM") for p in nginx_pids), "portcullis": proc_status(pc_proc.pid, "VmHWM"),
                 "routes": proc_status(rt_proc.pid, "VmHWM"), "traced": proc_status(tr_proc.pid, "VmHWM")}
        for path in ("small", "big"):
            for name in ("nginx", "portcullis", "routes", "traced"):
                print(f"{name:<12}{'/' + path:<8}{med(name, path, 'rps'):>10.0f}{med(name, path, 'p50'):>9.2f}"
                      f"{med(name, path, 'p99'):>9.2f}{med(name, path, 'cpu_us'):>12.1f}{med(name, path, 'user_us'):>9.1f}"
                      f"{peaks[name] / 1024:>14.1f}")
        print()
        for path in ("small", "big"):
            print(f"{'fwd-auth':<12}{'/' + path:<8}{med('forward-auth', path, 'rps'):>10.0f}"
                  f"{med('forward-auth', path, 'p50'):>9.2f}{med('forward-auth', path, 'p99'):>9.2f}"
                  f"{med('forward-auth', path, 'cpu_us'):>12.1f}   (nginx; Portcullis "
                  f"{med('forward-auth', path, 'extra_cpu_us'):.1f} CPU us per check)")
        print()
        for path in ("small", "big"):
            tput = med("portcullis", path, "rps") / med("nginx", path, "rps")
            p99 = med("portcullis", path, "p99") / med("nginx", path, "p99")
            cpu = med("portcullis", path, "cpu_us") / med("nginx", path, "cpu_us")
            user = med("portcullis", path, "user_us") / med("nginx", path, "user_us")
            print(f"portcullis / nginx  /{path:<6} throughput {tput:.2f}x (target >= 1.0), p99 {p99:.2f}x (target <= 1.0), "
                  f"CPU per request {cpu:.2f}x (target <= 1.0; user time alone {user:.2f}x)")
        # Each round runs nginx and Portcullis back to back, so a round's own ratio is less
        # exposed to what the machine does between rounds than the ratio of medians.
        for path in ("small", "big"):
            paired = list(zip(rows[("portcullis", path)], rows[("nginx", path)]))

            def ratios(key, paired=paired):
                return ", ".join(f"{p[key] / n[key]:.2f}" for p, n in paired)

            print(f"  round by round    /{path:<6} throughput {ratios('rps')}; p99 {ratios('p99')}; "
                  f"CPU per request {ratios('cpu_us')}")
        for path in ("small", "big"):
            tput = med("routes", path, "rps") / med("portcullis", path, "rps")
            print(f"20 routes + assertion / plain  /{path:<6} throughput {tput:.2f}x (target >= 0.95)")
        for path in ("small", "big"):
            tput = med("traced", path, "rps") / med("portcullis", path, "rps")
            cpu = med("traced", path, "cpu_us") - med("portcullis", path, "cpu_us")
            print(f"tracing on (1% sampled) / off  /{path:<6} throughput {tput:.2f}x, CPU {cpu:+.1f} us/request")
        print(f"spans exported by the traced row: about {sink.spans}, in {sink.exports} OTLP requests")
        print(f"portcullis idle RSS (one session): {idle_rss / 1024:.1f} MiB (target < 20)")

        # 1,000 concurrent keep-alive connections: no errors for Portcullis (measure()
        # refuses a run with any), and the tail; nginx's errors, if any, are reported.
        for name, port, pids, c in targets[:2]:
            r = measure(name, f"http://127.0.0.1:{port}/small", c, pids, expected[(name, "small")],
                        connections=1000, socket_errors_ok=name == "nginx")
            print(f"{name:<12}/small with 1000 connections: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, "
                  f"p99 {r['p99']:.2f} ms, {r['socket_errors']} errors")

        if SESSIONS > 0:
            started = time.time()
            subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{pc}/", str(SESSIONS), "64"]),
                           check=True, stdout=subprocess.DEVNULL)
            took = time.time() - started
            held = proc_status(pc_proc.pid, "VmRSS")
            print(f"portcullis RSS with {SESSIONS} live sessions (each from a real login, {took:.0f}s to create): "
                  f"{held / 1024:.1f} MiB (target < 80)")
            r = measure("portcullis", f"http://127.0.0.1:{pc}/small", cookie, [pc_proc.pid],
                        expected[("portcullis", "small")])
            print(f"portcullis /small with {SESSIONS} sessions held: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms")
            # The same logins into a fresh process: the sessions' own cost, without what
            # the load runs above left in the first one's heap.
            fresh, fresh_proc, _ = variant("fresh", {})
            before = proc_status(fresh_proc.pid, "VmRSS")
            subprocess.run(pinned(LOAD_CORE, [flood, f"http://127.0.0.1:{fresh}/", str(SESSIONS), "64"]),
                           check=True, stdout=subprocess.DEVNULL)
            after = proc_status(fresh_proc.pid, "VmRSS")
            print(f"portcullis RSS with {SESSIONS} live sessions in a fresh process: {after / 1024:.1f} MiB "
                  f"({(after - before) * 1024 / SESSIONS:.0f} bytes per session; target < 80)")
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
