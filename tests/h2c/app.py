"""An app behind Portcullis that answers every request with what it received, as JSON:
the HTTP version it was spoken to in and the request headers. Served by Hypercorn, which
accepts an `Upgrade: h2c` request by switching the connection to HTTP/2."""

import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    headers = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    body = json.dumps(
        {
            "http_version": scope["http_version"],
            "path": scope["path"],
            "headers": headers,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
