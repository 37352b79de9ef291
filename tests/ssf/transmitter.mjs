// An OpenID Shared Signals transmitter for Portcullis's tests, written independently of
// Portcullis's own code: panva's `jose` (installed with the test OpenID provider) signs
// the Security Event Tokens, Node's http module serves and pushes them.
//
//   node tests/ssf/transmitter.mjs '{"port": 9100, "receiver": "http://127.0.0.1:8080/api/v1/auth/ssf/idp",
//                                    "pushToken": "...", "pollToken": "..."}'
//
// It serves its configuration document (/.well-known/ssf-configuration), its keys
// (/jwks) and an RFC 8936 poll endpoint (/poll, bearer pollToken). The test drives it:
//
//   POST /test/push   {"events": {<type URI>: {...}}, "sub_id": {...}, ...overrides}
//        signs a SET and pushes it to the receiver (RFC 8935) with the push token;
//        answers {"status": <receiver's status>, "body": <receiver's body>, "jti": ...}
//   POST /test/queue  the same, but queued for the poll endpoint; answers {"jti": ...}
//   GET  /test/acks   {"acks": [jti...], "errs": {jti: {err, description}}}
//
// Overrides, to make a SET wrong in exactly one way: "aud", "iss", "iat", "jti", "typ",
// "otherKey": true (signed with a key the JWKS does not publish), "token" (push with this
// bearer token instead), "contentType", "raw" (push this body as is).
//
// Prints "listening <issuer>" once it accepts connections.
import http from 'node:http';
import crypto from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from '../oidc-provider/node_modules/jose/dist/webapi/index.js';

const config = JSON.parse(process.argv[2] ?? '{}');
const port = config.port ?? 9100;
const issuer = `http://127.0.0.1:${port}`;
const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
const other = await generateKeyPair('ES256');
const jwk = { ...(await exportJWK(publicKey)), kid: 'transmitter-1', alg: 'ES256', use: 'sig' };

const queue = new Map(); // jti -> SET, until acknowledged
const acks = [];
const errs = {};

async function sign(spec) {
  const jti = spec.jti ?? crypto.randomUUID();
  const claims = { events: spec.events ?? {} };
  if (spec.sub_id) claims.sub_id = spec.sub_id;
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: spec.typ ?? 'secevent+jwt', kid: 'transmitter-1' })
    .setIssuer(spec.iss ?? issuer)
    .setAudience(spec.aud ?? config.audience)
    .setIssuedAt(spec.iat ?? Math.floor(Date.now() / 1000))
    .setJti(jti);
  return { jti, set: await jwt.sign(spec.otherKey ? other.privateKey : privateKey) };
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
  });
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  if (req.method === 'GET' && url.pathname === '/.well-known/ssf-configuration') {
    return send(res, 200, {
      issuer,
      jwks_uri: `${issuer}/jwks`,
      delivery_methods_supported: [
        'urn:ietf:rfc:8935',
        'urn:ietf:rfc:8936',
      ],
      spec_version: '1_0',
    });
  }
  if (req.method === 'GET' && url.pathname === '/jwks') {
    return send(res, 200, { keys: [jwk] });
  }
  if (req.method === 'POST' && url.pathname === '/poll') {
    if (req.headers.authorization !== `Bearer ${config.pollToken}`) return send(res, 401, { err: 'unauthorized' });
    const body = JSON.parse((await readBody(req)) || '{}');
    for (const jti of body.ack ?? []) { acks.push(jti); queue.delete(jti); }
    for (const [jti, e] of Object.entries(body.setErrs ?? {})) { errs[jti] = e; queue.delete(jti); }
    return send(res, 200, { sets: Object.fromEntries(queue), moreAvailable: false });
  }
  if (req.method === 'POST' && url.pathname === '/test/push') {
    const spec = JSON.parse(await readBody(req));
    const { jti, set } = await sign(spec);
    const answer = await fetch(config.receiver, {
      method: 'POST',
      headers: {
        'content-type': spec.contentType ?? 'application/secevent+jwt',
        accept: 'application/json',
        authorization: `Bearer ${spec.token ?? config.pushToken}`,
      },
      body: spec.raw ?? set,
    });
    const text = await answer.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { parsed = text; }
    return send(res, 200, { status: answer.status, body: parsed, jti, set });
  }
  if (req.method === 'POST' && url.pathname === '/test/queue') {
    const spec = JSON.parse(await readBody(req));
    const { jti, set } = await sign(spec);
    queue.set(jti, set);
    return send(res, 200, { jti });
  }
  if (req.method === 'GET' && url.pathname === '/test/acks') {
    return send(res, 200, { acks, errs });
  }
  return send(res, 404, { error: 'not found' });
});

server.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
