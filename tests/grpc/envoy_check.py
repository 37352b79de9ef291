"""Envoy's side of the ext_authz gRPC check, for the tests: sends CheckRequests built with
Envoy's own generated API (PyPI `xds-protos`) through grpcio, exactly as an Envoy
ext_authz filter would, and prints what came back as JSON, one line per case.

usage: envoy_check.py HOST:PORT [CA_FILE] < cases.json   (with CA_FILE: over TLS, as localhost)
A case: {"method", "path", "host", "scheme", "headers": {..}, "context_extensions": {..},
"source": "ip"} or {"raw": "<hex of a message body>", "rpc": "/pkg.Service/Method"}.
"""
import json
import sys

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc


def request_of(case):
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=case.get("method", "GET"),
        path=case.get("path", "/"),
        host=case.get("host", "app.example.com"),
        scheme=case.get("scheme", "https"),
        protocol="HTTP/1.1",
    )
    headers = dict(case.get("headers", {}))
    headers.setdefault(":authority", http.host)
    headers.setdefault(":method", http.method)
    headers.setdefault(":path", http.path)
    for k, v in headers.items():
        http.headers[k] = v
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http)
    )
    for k, v in case.get("context_extensions", {}).items():
        attributes.context_extensions[k] = v
    if "source" in case:
        attributes.source.address.socket_address.address = case["source"]
        attributes.source.address.socket_address.port_value = 40000
    return external_auth_pb2.CheckRequest(attributes=attributes)


def header_list(options):
    return [[o.header.key, o.header.value, o.append_action] for o in options]


def run(channel, case):
    if "rpc" in case:
        call = channel.unary_unary(case["rpc"], request_serializer=None, response_deserializer=None)
        try:
            call(bytes.fromhex(case.get("raw", "")), timeout=10)
            return {"grpc": 0}
        except grpc.RpcError as e:
            return {"grpc": e.code().value[0], "message": e.details()}
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    try:
        resp = stub.Check(request_of(case), timeout=10)
    except grpc.RpcError as e:
        return {"rpc_error": e.code().value[0], "message": e.details()}
    out = {"grpc": resp.status.code, "message": resp.status.message}
    kind = resp.WhichOneof("http_response")
    if kind == "ok_response":
        out["ok"] = {
            "headers": header_list(resp.ok_response.headers),
            "headers_to_remove": list(resp.ok_response.headers_to_remove),
        }
    elif kind == "denied_response":
        d = resp.denied_response
        out["denied"] = {"status": d.status.code, "headers": header_list(d.headers), "body": d.body}
    return out


def main():
    target = sys.argv[1]
    cases = json.load(sys.stdin)
    if len(sys.argv) > 2:
        with open(sys.argv[2], "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        for case in cases:
            print(json.dumps(run(channel, case)), flush=True)


if __name__ == "__main__":
    main()
