#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind: the repeatable
figure on a noisy machine (the same binary and input give the same count, whatever else
the machine does).

For each configuration it runs Portcullis (one worker) under callgrind twice, with the
same start-up and login, serving REQUESTS and then 2 x REQUESTS authenticated GETs of a
small body over one keep-alive connection; the difference of the two totals divided by
REQUESTS is the cost of one request, start-up and login cancelled out. aws-lc's
start-up entropy gathering (jitterentropy: some 400 million instructions, a different
count each run) is left out of both totals. The upstream (nginx) and the identity
provider run outside valgrind.

Configurations: plain (a session cookie), routes (20 routes and the identity assertion,
as in proxy.py), traced (the plain one exporting OpenTelemetry traces with a 1% sampler
to a sink in this script), traced-all (every request sampled), nginx (nginx as the plain
keep-alive proxy of proxy.py, no authentication, under callgrind in one process: the
count to beat).

Environment: REQUESTS (default 2000), CONFIGS (comma-separated subset),
PORTCULLIS_BIN / LOGIN_FLOOD_BIN (skip the release build; a build with debug line
tables names functions in the annotated output, which is kept under $WORK if set),
CACHE=1 (also simulate the first-level caches, `--cache-sim=yes`, with this machine's
sizes, and print instruction and data cache misses per request beside the instructions:
what a request costs beyond its instruction count, when its code or data does not stay
in the 32 KiB first-level caches between requests).
"""

import glob
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SMALL_BODY, build, free_port, need, nginx, wait_http  # noqa: E402
from proxy import otlp_sink, routes_yaml  # noqa: E402

REQUESTS = int(os.environ.get("REQUESTS", "2000"))
CACHE = os.environ.get("CACHE") == "1"
# The events callgrind counts: instructions, and with the cache simulation the reads,
# writes and first- and last-level misses of each kind.
EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"] if CACHE else ["Ir"]
VALGRIND = ["valgrind", "--tool=callgrind"] + (["--cache-sim=yes"] if CACHE else [])


def requests(port, cookie, count):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        conn.request("GET", "/small", headers={"Cookie": cookie})
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200 and body == SMALL_BODY, f"{r.status} {body[:80]}"
    conn.close()


def counted(portcullis, flood, env, count, work, label):
    """Total events (`EVENTS`) of a Portcullis run that serves `count` requests, and the
    instructions of them spent in SHA-256's block function."""
    port, idp = free_port(), free_port()
    callback = f"http://127.0.0.1:{port}/api/v1/auth/callback"
    idp_proc = subprocess.Popen([portcullis, "dev-idp", "--listen", f"127.0.0.1:{idp}", "--client-id", "bench",
                                 "--client-secret", "bench-secret", "--redirect-uri", callback],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = os.path.join(work, f"callgrind.{label}.{count}")
    run_env = dict(env, LISTEN_ADDR=f"127.0.0.1:{port}", OAUTH_ISSUER_URL=f"http://127.0.0.1:{idp}",
                   OAUTH_REDIRECT_URL=callback, SERVER__WORKERS="1")
    proc = subprocess.Popen([*VALGRIND, f"--callgrind-out-file={out}", portcullis],
                            env=run_env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, f"{label}.{count}.log"), "w"))
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
        cookie = subprocess.run([flood, f"http://127.0.0.1:{port}/", "1", "1"], capture_output=True, text=True,
                                check=True).stdout.strip()
        requests(port, cookie, count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        idp_proc.send_signal(signal.SIGTERM)
        idp_proc.wait(timeout=10)
    return callgrind_total(out, without=entropy_gathering), spent_in(out, "sha256_block_data_order")["Ir"]


def counted_nginx(work, upstream, count):
    """Total events (`EVENTS`) of nginx as a plain keep-alive proxy (as in proxy.py, no
    authentication) serving `count` requests, for comparison."""
    port = free_port()
    out = os.path.join(work, f"callgrind.nginx.{count}")
    proc = nginx(work, f"nginx-{count}", f"""
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffers 16 8k;
        }}
    }}""", wrap=(*VALGRIND, f"--callgrind-out-file={out}",
              f"--log-file={os.path.join(work, f'nginx.{count}.log')}"))
    try:
        wait_http(f"http://127.0.0.1:{port}/small", timeout=120)
        # A cookie of the size of a session's, which nginx passes on as it is.
        requests(port, "portcullis_session=" + "x" * 43, count)
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=120)
    return callgrind_total(out)


def callgrind_total(out, without=lambda path: {}):
    """The events counted in callgrind's files `out*` (one per process), less
    `without(path)` of each, as {event: count}."""
    total = dict.fromkeys(EVENTS, 0)
    for path in glob.glob(out + "*"):
        with open(path) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    for event, value in zip(EVENTS, line.split()[1:]):
                        total[event] += int(value)
                    break
        for event, value in without(path).items():
            total[event] -= value
    return total


def entropy_gathering(path):
    """Events of aws-lc's jitterentropy (its start-up entropy source): counts that differ
    from run to run of the same binary (some 400 million instructions, and with the cache
    simulation some 400,000 data misses, as it walks memory on purpose), so left out."""
    return spent_in(path, "jitterentropy")


# A percentage callgrind_annotate prints after a count: "1,234 (0.25%)".
PERCENT = re.compile(r"\(\s*[0-9.]+%\)")


def spent_in(path, name):
    """Events spent in the functions whose names contain `name` (their own, not their
    callees'), in the callgrind file `path` (or files `path*`), as {event: count}."""
    spent = dict.fromkeys(EVENTS, 0)
    for each in glob.glob(path + "*") if not os.path.exists(path) else [path]:
        annotated = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", each],
                                   capture_output=True, text=True, check=True).stdout
        for line in annotated.splitlines():
            # One count (or "." for none) per event, then the function's name.
            fields = PERCENT.sub("", line).split(None, len(EVENTS))
            if len(fields) != len(EVENTS) + 1 or name not in fields[-1]:
                continue
            counts = [c.replace(",", "") for c in fields[:-1]]
            if all(c == "." or c.isdigit() for c in counts) and any(c.isdigit() for c in counts):
                for event, c in zip(EVENTS, counts):
                    spent[event] += int(c) if c.isdigit() else 0
    return spent


def main():
    need("valgrind", "valgrind")
    need("nginx", "nginx")
    need("openssl", "openssl")
    portcullis, flood = build()
    work = os.environ.get("WORK") or tempfile.mkdtemp(prefix="portcullis-instr-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    procs = []
    try:
        up = free_port()
        procs.append(nginx(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{up};
        location = /small {{ default_type text/plain; return 200 "{SMALL_BODY.strip()}\\n"; }}
    }}"""))
        wait_http(f"http://127.0.0.1:{up}/small")
        base = {
            "PATH": os.environ["PATH"],
            "UPSTREAM_URL": f"http://127.0.0.1:{up}",
            "OAUTH_ENABLED": "true",
            "OAUTH_CLIENT_ID": "bench",
            "OAUTH_CLIENT_SECRET": "bench-secret",
            "COOKIE_SECRET": "bench-cookie-secret-0123456789abcdef",
            "LOG_LEVEL": "warn",
        }
        key = os.path.join(work, "identity-key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", key], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(work, "routes.yaml"), "w") as f:
            f.write(routes_yaml(key))
        sink = otlp_sink()
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_port}",
                  "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
        configs = {
            "plain": {},
            "routes": {"PORTCULLIS_CONFIG": os.path.join(work, "routes.yaml")},
            "traced": traced,
            "traced-all": dict(traced, OTEL_TRACES_SAMPLER="always_on"),
            "nginx": None,
        }
        wanted = [c for c in os.environ.get("CONFIGS", ",".join(configs)).split(",") if c]
        print(f"callgrind, one worker, {REQUESTS} requests of /small over one keep-alive connection "
              f"(difference of a {REQUESTS} and a {2 * REQUESTS} request run, aws-lc's start-up entropy "
              f"gathering left out)", flush=True)
        results = {}
        hashing = {}
        for name in wanted:
            if name == "nginx":
                once = counted_nginx(work, up, REQUESTS)
                twice = counted_nginx(work, up, 2 * REQUESTS)
            else:
                env = dict(base, **configs[name])
                once, sha_once = counted(portcullis, flood, env, REQUESTS, work, name)
                twice, sha_twice = counted(portcullis, flood, env, 2 * REQUESTS, work, name)
                hashing[name] = (sha_twice - sha_once) / REQUESTS
            per_request = {event: (twice[event] - once[event]) / REQUESTS for event in EVENTS}
            results[name] = per_request["Ir"]
            misses = ""
            if CACHE:
                misses = (f", {per_request['I1mr']:.0f} instruction cache misses, "
                          f"{per_request['D1mr'] + per_request['D1mw']:.0f} data cache misses "
                          f"({per_request['D1mr']:.0f} reads, {per_request['D1mw']:.0f} writes)")
            print(f"  {name:<12} {results[name]:>10.0f} instructions per request{misses}", flush=True)
        for name, sha in hashing.items():
            # valgrind does not offer the CPU's SHA extensions, so aws-lc takes its vector
            # code path under callgrind, and the hardware path (a fraction of the
            # instructions) when run on a CPU that has them.
            print(f"  {name:<12} {sha:>10.0f} of them in SHA-256 blocks (the session's store key; without "
                  f"SHA extensions, which valgrind does not offer)")
        if "plain" in results:
            for name, value in results.items():
                if name != "plain":
                    print(f"{name} / plain: {value / results['plain']:.3f}x ({value - results['plain']:+.0f} per request)")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        if not os.environ.get("WORK"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
