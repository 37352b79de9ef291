#!/usr/bin/env python3
"""The Helm chart and the Kubernetes examples, checked without a cluster.

For the chart's every example values file (charts/portcullis/ci/) and the sidecar
example chart: `helm lint --strict`, `helm template`, every rendered manifest validated
against the Kubernetes schemas offline (kubernetes-validate, pinned), the security
settings and probes asserted, and, most of all, the configuration the chart renders
handed to the real `portcullis check --offline` (secrets resolved from the rendered or
example Secret), so a chart that Portcullis would refuse to start with fails here.

usage: test_chart.py PORTCULLIS_BINARY
"""
import base64
import json
import os
import tempfile
import subprocess
import sys

import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "portcullis")
K8S_VERSION = "1.34.0"
# Values an existingSecret would hold in a real cluster.
EXISTING_SECRET = {
    "cookie-secret": "a-cookie-secret-of-at-least-32-bytes-long",
    "oauth-client-secret": "client-secret",
    "redis-url": "redis://redis.cache.svc.cluster.local:6379",
    "scim-database-url": "postgres://portcullis:pw@db.example.com/portcullis",
    "scim-okta-password": "okta-provisioning-password",
    "scim-microsoft-token": "entra-provisioning-token-0123456789",
    "okta-client-secret": "okta-client-secret",
    "microsoft-client-secret": "microsoft-client-secret",
}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print(f"FAIL  {message}")


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def render(chart, values=None, sets=()):
    args = ["helm", "template", "release", chart]
    if values:
        args += ["-f", values]
    for s in sets:
        args += ["--set", s]
    out = run(args)
    return out.returncode, out.stdout, out.stderr


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate(label, manifests):
    for m in manifests:
        kind = m["kind"]
        try:
            kubernetes_validate.validate(m, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Custom resources (ServiceMonitor, HTTPRoute): no schema in the package.
            custom = ("ServiceMonitor", "HTTPRoute", "SecurityPolicy", "ReferenceGrant", "AuthorizationPolicy")
            check(kind in custom, f"{label}: no schema for {kind}")
        except kubernetes_validate.ValidationError as e:
            check(False, f"{label}: {kind} {m['metadata']['name']}: {e.message} at {list(e.path)}")


def container_env(container, secrets):
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"])
            if value is None and not ref.get("optional"):
                check(False, f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
            if value is not None:
                env[e["name"]] = value
    return env


def portcullis_accepts(label, binary, env):
    env = dict(env, PATH=os.environ["PATH"])
    # A key the chart mounts from a Secret: a real key of the same kind stands in for it.
    if "IDENTITY_JWT__SIGNING_KEY_FILE" in env:
        key = os.path.join(tempfile.mkdtemp(prefix="portcullis-chart-"), "identity-key.pem")
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        env["IDENTITY_JWT__SIGNING_KEY_FILE"] = key
    # A CA bundle the chart mounts from a ConfigMap: a real CA certificate stands in for it.
    if "OUTBOUND__CA_FILE" in env:
        tmp = tempfile.mkdtemp(prefix="portcullis-chart-")
        ca, ca_key = os.path.join(tmp, "ca.crt"), os.path.join(tmp, "ca.key")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=chart test CA"])
        env["OUTBOUND__CA_FILE"] = ca
    out = run([binary, "check", "--offline"], env=env)
    check(out.returncode == 0, f"{label}: portcullis check refused the rendered configuration:\n{out.stdout}{out.stderr}")


def secrets_of(manifests):
    found = {}
    for m in manifests:
        if m["kind"] == "Secret":
            values = dict(m.get("stringData", {}))
            for k, v in m.get("data", {}).items():
                values[k] = base64.b64decode(v).decode()
            found[m["metadata"]["name"]] = values
    return found


def assert_container(label, c):
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, f"{label}: root filesystem not read-only")
    check(sc.get("allowPrivilegeEscalation") is False, f"{label}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities not dropped")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{label}: liveness probe not /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness probe not /readyz")
    check(c["ports"][0]["name"] == "http", f"{label}: port not named http")


def assert_pod(label, spec):
    psc = spec["securityContext"]
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"{label}: pod may run as root")


def chart_case(binary, values):
    label = os.path.relpath(values, ROOT)
    out = run(["helm", "lint", "--strict", CHART, "-f", values])
    check(out.returncode == 0, f"{label}: helm lint --strict:\n{out.stdout}{out.stderr}")
    code, text, err = render(CHART, values)
    check(code == 0, f"{label}: helm template failed: {err}")
    if code != 0:
        return
    manifests = docs(text)
    validate(label, manifests)
    kinds = [m["kind"] for m in manifests]
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"].get("annotations", {})
    check("checksum/config" in annotations, f"{label}: no checksum/config annotation")
    assert_pod(label, pod["spec"])
    container = pod["spec"]["containers"][0]
    assert_container(label, container)
    secrets = secrets_of(manifests)
    with open(values) as f:
        given = yaml.safe_load(f)
    existing = given.get("secrets", {}).get("existingSecret")
    if existing:
        made = [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"]
        check(made in ([], ["release-portcullis-admin"]),
              f"{label}: a Secret other than the admin token's is created although existingSecret is set: {made}")
        secrets[existing] = EXISTING_SECRET
    env = container_env(container, secrets)
    portcullis_accepts(label, binary, env)
    print(f"ok    {label}: {len(manifests)} manifests ({', '.join(sorted(set(kinds)))}), "
          f"{len(env)} environment variables accepted by portcullis check")
    return given, manifests, env


def main():
    binary = os.path.abspath(sys.argv[1])
    cases = {}
    ci = os.path.join(CHART, "ci")
    for name in sorted(os.listdir(ci)):
        cases[name] = chart_case(binary, os.path.join(ci, name))

    # What each example is for.
    _, manifests, env = cases["gateway-values.yaml"]
    check(env.get("GLOBAL_AGENT_HTTPS_PROXY") == "http://proxy.corp.example.com:3128", "gateway: no outbound proxy")
    check(env.get("OUTBOUND__CA_FILE") == "/etc/portcullis/ca/ca.crt", "gateway: CA bundle not configured")
    check(env.get("SESSION__REDIS__URL", "").startswith("redis://"), "gateway: no Redis URL from the Secret")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    check("replicas" not in deployment["spec"], "gateway: replicas set although the HPA scales")
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    check(any(m["mountPath"] == "/etc/portcullis/ca" for m in mounts), "gateway: CA bundle not mounted")
    for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "PodDisruptionBudget"):
        check(any(m["kind"] == kind for m in manifests), f"gateway: no {kind}")

    _, manifests, env = cases["gateway-values.yaml"]
    routes = json.loads(env.get("ROUTES", "[]"))
    check([r.get("name") for r in routes] == ["health", "admin", None], f"gateway: routes not passed through as JSON: {env.get('ROUTES')}")
    check(env.get("IDENTITY_JWT__ENABLED") == "true", "gateway: identityJwt.secretName did not turn the assertion on")
    check(env.get("IDENTITY_JWT__SIGNING_KEY_FILE") == "/etc/portcullis/identity-jwt/identity-key.pem", "gateway: the assertion key is not the mounted file")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    check(volumes.get("portcullis-identity-jwt", {}).get("secret", {}).get("secretName") == "grafana-identity-key", "gateway: the identity key Secret is not mounted")
    # The admin listener: a port of its own, in the Service but behind no Ingress, its
    # token from a chart-made Secret, scraped by the ServiceMonitor.
    for name in ("gateway-values.yaml", "minimal-values.yaml", "forward-auth-values.yaml"):
        _, manifests, env = cases[name]
        check(env.get("ADMIN__LISTEN_ADDR") == "0.0.0.0:9090", f"{name}: no admin listener: {env.get('ADMIN__LISTEN_ADDR')}")
        check(len(env.get("ADMIN__TOKEN", "")) >= 32, f"{name}: no admin token of 32 bytes from a Secret")
        service = next(m for m in manifests if m["kind"] == "Service")
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        check(ports.get("admin", {}).get("targetPort") == "admin", f"{name}: the Service has no admin port: {ports}")
        container = next(m for m in manifests if m["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
        check(any(p["name"] == "admin" and p["containerPort"] == 9090 for p in container["ports"]), f"{name}: no admin container port")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            check(container[probe]["httpGet"]["port"] == "admin", f"{name}: {probe} not on the admin port")
    _, manifests, _ = cases["gateway-values.yaml"]
    ingress = next(m for m in manifests if m["kind"] == "Ingress")
    backends = [p["backend"]["service"]["port"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    check(all(b.get("number") != 9090 and b.get("name") != "admin" for b in backends), f"gateway: the Ingress routes to the admin port: {backends}")
    monitor = next(m for m in manifests if m["kind"] == "ServiceMonitor")
    check(monitor["spec"]["endpoints"][0]["port"] == "admin", "gateway: the ServiceMonitor does not scrape the admin port")

    # The check init container: the same image, environment and mounts, check --offline.
    _, manifests, env = cases["gateway-values.yaml"]
    pod = next(m for m in manifests if m["kind"] == "Deployment")["spec"]["template"]["spec"]
    inits = pod.get("initContainers", [])
    check([c["name"] for c in inits] == ["portcullis-check"], f"gateway: no check init container: {inits}")
    if inits:
        init, main_c = inits[0], pod["containers"][0]
        check(init["args"] == ["check", "--offline"], f"gateway: the init container runs {init['args']}")
        check(init["env"] == main_c["env"] and init["image"] == main_c["image"], "gateway: the check sees another configuration than the proxy")
        check(init.get("volumeMounts") == main_c.get("volumeMounts"), "gateway: the check does not see the proxy's files")
        check(init["securityContext"] == main_c["securityContext"], "gateway: the check runs with another security context")
    for name in ("minimal-values.yaml", "forward-auth-values.yaml"):
        spec = next(m for m in cases[name][1] if m["kind"] == "Deployment")["spec"]["template"]["spec"]
        check("initContainers" not in spec, f"{name}: an init container by default")

    _, manifests, env = cases["forward-auth-values.yaml"]
    check(env.get("FORWARD_AUTH_ONLY") == "true" and "UPSTREAM_URL" not in env, "forward-auth: not forward-auth only")
    # Envoy's gRPC check: on only when asked for, a port of its own in the Service (h2c).
    check(env.get("EXT_AUTHZ__LISTEN_ADDR") == "0.0.0.0:9001", f"forward-auth: no gRPC check: {env.get('EXT_AUTHZ__LISTEN_ADDR')}")
    service = next(m for m in manifests if m["kind"] == "Service")
    grpc_port = next((p for p in service["spec"]["ports"] if p["name"] == "grpc"), {})
    check(grpc_port.get("targetPort") == "grpc" and grpc_port.get("appProtocol") == "kubernetes.io/h2c",
          f"forward-auth: the Service has no h2c grpc port: {service['spec']['ports']}")
    container = next(m for m in manifests if m["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    check(any(p["name"] == "grpc" and p["containerPort"] == 9001 for p in container["ports"]), "forward-auth: no grpc container port")
    for name in ("gateway-values.yaml", "minimal-values.yaml"):
        check("EXT_AUTHZ__LISTEN_ADDR" not in cases[name][2], f"{name}: the gRPC check is on by default")
    check(env.get("SCIM__ENDPOINTS__MICROSOFT__TOKEN") == EXISTING_SECRET["scim-microsoft-token"], "forward-auth: Entra token not from the Secret")
    check(env.get("SCIM__ENDPOINTS__OKTA__USERNAME") == "okta-provisioning", "forward-auth: Okta user name missing")
    check(env.get("SCIM__DATABASE_URL", "").startswith("postgres://"), "forward-auth: SCIM not on PostgreSQL")
    check(env.get("SESSION__COOKIE_DOMAIN") == "apps.example.com", "forward-auth: no cookie domain")
    notes = run(["helm", "install", "release", CHART, "--dry-run=client", "-f", os.path.join(ci, "forward-auth-values.yaml")])
    check("nginx.ingress.kubernetes.io/auth-url" in notes.stdout and "/api/v1/auth/verify" in notes.stdout,
          f"forward-auth: the notes do not print the ingress-nginx annotations:\n{notes.stdout[-2000:]}{notes.stderr}")

    _, manifests, env = cases["minimal-values.yaml"]
    check(env.get("SCIM__DATABASE_URL") == "sqlite:///var/lib/portcullis/scim.db", "minimal: SQLite not on the volume")
    check(any(m["kind"] == "PersistentVolumeClaim" for m in manifests), "minimal: no volume for SQLite")
    check(any(m["kind"] == "HTTPRoute" for m in manifests), "minimal: no HTTPRoute")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    check(deployment["spec"].get("strategy", {}).get("type") == "Recreate", "minimal: SQLite volume with a rolling update")

    # A config change rolls the pods; a secret change of the chart-made Secret too.
    minimal = os.path.join(ci, "minimal-values.yaml")
    annotations = []
    for sets in ((), ("config.oauth.client_id=other",), ("secrets.clientSecret=rotated",)):
        _, text, _ = render(CHART, minimal, sets)
        pod = next(m for m in docs(text) if m["kind"] == "Deployment")["spec"]["template"]
        annotations.append(pod["metadata"]["annotations"])
    check(annotations[0]["checksum/config"] != annotations[1]["checksum/config"], "a config change does not roll the pods")
    check(annotations[0]["checksum/secret"] != annotations[2]["checksum/secret"], "a secret change does not roll the pods")

    # Mistakes are refused with the key and the fix.
    for sets, expected in (
        (("mode=bogus",), "write gateway, forward-auth, or sidecar"),
        (("config.upstream_url=",), "config.upstream_url is empty"),
        (("secrets.cookieSecret=",), "secrets.cookieSecret is empty"),
        (("replicaCount=3",), "replicaCount > 1"),
    ):
        code, _, err = render(CHART, minimal, sets)
        check(code != 0 and expected in err, f"helm template --set {sets} should fail with {expected!r}: {err}")

    # The defaults a new user starts from: one replica on the memory store, no PDB that
    # would block node drains; several replicas on the memory store are refused (a user
    # would be sent back to the login by every other replica) unless pinned by ClientIP.
    code, text, err = render(CHART, None, ("config.upstream_url=http://app:8080", "secrets.cookieSecret=" + "c" * 40))
    check(code == 0, f"defaults: helm template failed: {err}")
    if code == 0:
        manifests = docs(text)
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        check(deployment["spec"].get("replicas") == 1, "defaults: not one replica")
        check(not any(m["kind"] == "PodDisruptionBudget" for m in manifests), "defaults: a PDB with one replica blocks node drains")
    base = ("config.upstream_url=http://app:8080", "secrets.cookieSecret=" + "c" * 40)
    for sets in (("replicaCount=2",), ("autoscaling.enabled=true",)):
        code, _, err = render(CHART, None, base + sets)
        check(code != 0 and "config.session.store: redis" in err, f"defaults --set {sets}: several replicas on the memory store not refused: {err}")
    code, text, err = render(CHART, None, base + ("replicaCount=2", "service.sessionAffinity=ClientIP"))
    check(code == 0 and "sessionAffinity: ClientIP" in text, f"replicas pinned by ClientIP refused: {err}")
    code, _, err = render(CHART, None, base + ("replicaCount=2", "config.session.store=redis", "secrets.redisUrl=redis://r:6379"))
    check(code == 0, f"several replicas on Redis refused: {err}")

    # The sidecar, included by another chart.
    sidecar = os.path.join(ROOT, "examples", "kubernetes", "sidecar-chart")
    out = run(["helm", "dependency", "update", sidecar])
    check(out.returncode == 0, f"sidecar chart: helm dependency update: {out.stderr}")
    out = run(["helm", "lint", "--strict", sidecar])
    check(out.returncode == 0, f"sidecar chart: helm lint --strict:\n{out.stdout}{out.stderr}")
    code, text, err = render(sidecar)
    check(code == 0, f"sidecar chart: helm template: {err}")
    manifests = docs(text)
    validate("sidecar chart", manifests)
    check([m["kind"] for m in manifests].count("Deployment") == 1, "sidecar chart: the Portcullis chart deployed itself too")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    check(names == ["app", "portcullis"], f"sidecar chart: containers {names}")
    portcullis = pod["containers"][1]
    assert_pod("sidecar chart", pod)
    assert_container("sidecar chart", portcullis)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in portcullis["env"] if "valueFrom" in e}
    check(refs.get("COOKIE_SECRET") == {"name": "my-app-oauth", "key": "cookie-secret"}, f"sidecar chart: COOKIE_SECRET ref {refs.get('COOKIE_SECRET')}")
    check(refs.get("OAUTH_CLIENT_SECRET", {}).get("key") == "oauth-client-secret", "sidecar chart: no client secret ref")
    env = container_env(portcullis, {"my-app-oauth": EXISTING_SECRET})
    check(env.get("UPSTREAM_URL") == "http://127.0.0.1:3000", "sidecar chart: Portcullis does not forward to the app on localhost")
    check("ADMIN__LISTEN_ADDR" not in env, "sidecar chart: an admin listener without a Secret for its token")
    service = next(m for m in manifests if m["kind"] == "Service")
    check(service["spec"]["ports"][0]["targetPort"] == "http", "sidecar chart: the Service does not point at Portcullis")
    portcullis_accepts("sidecar chart", binary, env)
    print(f"ok    sidecar chart: containers {names}, Service -> portcullis")

    # The plain manifests of examples/kubernetes.
    for name in ("sidecar.yaml", "ingress-nginx.yaml"):
        path = os.path.join(ROOT, "examples", "kubernetes", name)
        with open(path) as f:
            manifests = docs(f.read())
        validate(name, manifests)
        secrets = secrets_of(manifests)
        for m in manifests:
            if m["kind"] == "Deployment":
                for c in m["spec"]["template"]["spec"]["containers"]:
                    if c["name"] == "portcullis":
                        assert_container(name, c)
                        portcullis_accepts(name, binary, container_env(c, secrets))
            if m["kind"] == "Ingress":
                ann = m["metadata"].get("annotations", {})
                if "nginx.ingress.kubernetes.io/auth-url" in ann:
                    check(ann["nginx.ingress.kubernetes.io/auth-url"].split("?")[0].endswith("/api/v1/auth/verify"), f"{name}: auth-url")
                    check("/api/v1/auth/login" in ann["nginx.ingress.kubernetes.io/auth-signin"], f"{name}: auth-signin")
        print(f"ok    examples/kubernetes/{name}: {len(manifests)} manifests")

    # Envoy's gRPC check behind Envoy Gateway, the Gateway API filter and Istio: the
    # Portcullis manifests validated and accepted by portcullis check, and every gateway
    # file pointing at the port Portcullis serves the check on.
    ext_dir = os.path.join(ROOT, "examples", "kubernetes", "ext-authz")
    def ext_docs(name):
        with open(os.path.join(ext_dir, name)) as f:
            manifests = docs(f.read())
        validate(f"ext-authz/{name}", manifests)
        return manifests
    manifests = ext_docs("portcullis.yaml")
    secrets = secrets_of(manifests)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert_container("ext-authz/portcullis.yaml", c)
    env = container_env(c, secrets)
    portcullis_accepts("ext-authz/portcullis.yaml", binary, env)
    grpc_port = int(env["EXT_AUTHZ__LISTEN_ADDR"].rsplit(":", 1)[1])
    check({"name": "grpc", "containerPort": grpc_port} in c["ports"], "ext-authz: the grpc container port is not the check's")
    service = next(m for m in manifests if m["kind"] == "Service")
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    check(svc_ports["grpc"]["targetPort"] == "grpc", "ext-authz: the Service's grpc port")
    check(svc_ports["grpc"].get("appProtocol") == "kubernetes.io/h2c", "ext-authz: the grpc port must say h2c")
    svc = (service["metadata"]["name"], service["metadata"]["namespace"])
    def names_check(label, ref):
        check((ref["name"], ref.get("namespace")) == svc and ref["port"] == svc_ports["grpc"]["port"],
              f"{label}: does not name the Service's grpc port: {ref}")
    eg = ext_docs("envoy-gateway.yaml")
    policy = next(m for m in eg if m["kind"] == "SecurityPolicy")
    check(policy["spec"]["extAuth"].get("failOpen") is False, "envoy gateway: fails closed")
    names_check("envoy gateway", policy["spec"]["extAuth"]["grpc"]["backendRefs"][0])
    login = next(m for m in eg if m["kind"] == "HTTPRoute" and m["metadata"]["name"] == "app-login")
    check(login["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/api/v1/auth/", "envoy gateway: login route")
    check(login["spec"]["rules"][0]["backendRefs"][0]["port"] == svc_ports["http"]["port"], "envoy gateway: login goes to http")
    ga = ext_docs("gateway-api.yaml")
    rules = next(m for m in ga if m["kind"] == "HTTPRoute")["spec"]["rules"]
    check(rules[0]["matches"][0]["path"]["value"] == "/api/v1/auth/" and "filters" not in rules[0],
          "gateway api: /api/v1/auth/ first and unchecked")
    ext = rules[1]["filters"][0]
    check(ext["type"] == "ExternalAuth" and ext["externalAuth"]["protocol"] == "GRPC", "gateway api: ExternalAuth GRPC")
    names_check("gateway api", ext["externalAuth"]["backendRef"])
    istio = ext_docs("istio.yaml")
    mesh = yaml.safe_load(next(m for m in istio if m["kind"] == "ConfigMap")["data"]["mesh"])
    provider = mesh["extensionProviders"][0]
    grpc = provider["envoyExtAuthzGrpc"]
    check(grpc["service"] == f"{svc[0]}.{svc[1]}.svc.cluster.local" and grpc["port"] == svc_ports["grpc"]["port"],
          "istio: the provider does not name the grpc port")
    check(grpc.get("failOpen") is False, "istio: fails closed")
    policy = next(m for m in istio if m["kind"] == "AuthorizationPolicy")
    check(policy["spec"]["action"] == "CUSTOM" and policy["spec"]["provider"]["name"] == provider["name"],
          "istio: the policy does not use the provider")
    print("ok    examples/kubernetes/ext-authz: Portcullis, Envoy Gateway, Gateway API, Istio")

    # docker compose: the environment as compose would resolve it from .env.example.
    compose_dir = os.path.join(ROOT, "examples", "docker-compose")
    dotenv = {}
    with open(os.path.join(compose_dir, ".env.example")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                dotenv[key] = value
    with open(os.path.join(compose_dir, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    env = {}
    for key, value in compose["services"]["portcullis"]["environment"].items():
        for name, sub in dotenv.items():
            value = value.replace("${%s}" % name, sub)
        check("${" not in value, f"docker-compose: {key} refers to a variable .env.example lacks")
        env[key] = value
    portcullis_accepts("docker-compose", binary, env)
    labels = compose["services"]["traefik-protected-app"]["labels"]
    prefix = "traefik.http.middlewares.portcullis.forwardauth."
    check(labels[prefix + "address"].endswith(":8080/api/v1/auth/verify"), "traefik labels: address")
    answered = {"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups"}
    check(set(labels[prefix + "authResponseHeaders"].split(",")) == answered, "traefik labels: authResponseHeaders")
    print("ok    examples/docker-compose: environment accepted by portcullis check; Traefik labels")

    # Envoy cannot be installed here: its exchange with Portcullis is tested in
    # crates/portcullis/tests/forward_auth.rs; this checks the example asks for exactly it.
    with open(os.path.join(ROOT, "examples", "envoy", "envoy.yaml")) as f:
        envoy = yaml.safe_load(f)
    manager = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = {f["name"]: f.get("typed_config", {}) for f in manager["http_filters"]}
    authz = filters.get("envoy.filters.http.ext_authz", {})
    service = authz.get("http_service", {})
    check(service.get("path_prefix") == "/api/v1/auth/verify", "envoy: path_prefix")
    check(authz.get("failure_mode_allow") is False, "envoy: fails closed")
    sent = {p["exact"] for p in service["authorization_request"]["allowed_headers"]["patterns"]}
    check({"cookie", "accept"} <= sent, "envoy: the session cookie and Accept reach the check")
    copied = {p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]}
    check(copied == {h.lower() for h in answered}, "envoy: every X-Auth-Request header is copied")
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    check(service["server_uri"]["cluster"] in clusters, "envoy: the check's cluster exists")
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    auth_route = next(r for r in routes if r["match"].get("prefix") == "/api/v1/auth/")
    check(routes[0] is auth_route, "envoy: /api/v1/auth/ is matched before the app")
    check(auth_route["route"]["cluster"] == service["server_uri"]["cluster"], "envoy: login goes to Portcullis")
    check(auth_route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True,
          "envoy: the login itself is not checked")
    print("ok    examples/envoy: ext_authz path prefix, headers, login route")

    if failures:
        print(f"\n{len(failures)} chart checks failed")
        sys.exit(1)
    print("\nchart checks passed")


if __name__ == "__main__":
    main()
