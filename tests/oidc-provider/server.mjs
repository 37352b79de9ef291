// A real third-party OpenID provider for Portcullis's end-to-end tests: panva's
// oidc-provider with its built-in development login and consent forms (any login name
// and password are accepted). Configured entirely from one JSON argument:
//
//   node server.mjs '{"port": 9000, "clients": [{"client_id": "...", "client_secret": "...",
//                     "redirect_uris": ["http://127.0.0.1:8080/api/v1/auth/callback"]}],
//                     "groups": {"alice": ["admins"]}}'
//
// Optional: "accounts": {"alice": {<extra claims>}} merged into an account's claims (an
// Entra-like `tid` and `oid`, `_claim_names` for group overage, Google's `hd`, ADFS's
// `upn`); "idTokenClaims": true to put every released claim into the ID token too, as
// Entra and Google do (oidc-provider otherwise keeps scope claims for userinfo).
//
// "accessTokenTtl": seconds an access token lives (default 3600), for refresh tests.
//
// "backchannelLogout": true turns on OpenID Connect Back-Channel Logout: a sign-out at
// the provider posts a logout token to each client's `backchannel_logout_uri`. The
// provider's outbound requests refuse loopback addresses by default (SSRF protection);
// this test provider drops that guard so it can reach Portcullis on 127.0.0.1.
//
// Token introspection (RFC 7662) and revocation (RFC 7009) are on: access tokens are
// opaque, and `POST /token/revocation` revokes one.
//
// Test controls: `GET /test/disable?login=alice` disables an account (its refresh tokens
// are refused from then on, as when an administrator blocks a user).
//
// Prints "listening <issuer>" once it accepts connections, and "grant <type>" for every
// token granted.
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const port = config.port ?? 9000;
// "issuer" (optional): the public address when a TLS proxy is in front; the proxy's
// X-Forwarded-Proto is then trusted.
const issuer = config.issuer ?? `http://127.0.0.1:${port}`;
const groups = config.groups ?? {};
const accounts = config.accounts ?? {};
const disabled = new Set();
// Claims released with the `openid` scope: the subject plus whatever extra claims the
// test's accounts carry.
const extra = [...new Set(Object.values(accounts).flatMap((a) => Object.keys(a)))]
  .filter((c) => !c.startsWith('_'));

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  // Cookie names that cannot clash with Portcullis's own: browsers do not separate
  // cookies by port, and both run on 127.0.0.1 in the tests.
  cookies: {
    names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' },
    keys: ['portcullis-test-provider-cookie-key'],
  },
  claims: {
    openid: ['sub', ...extra],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: Boolean(config.backchannelLogout) },
  },
  // Test provider only: no SSRF guard, so logout tokens reach 127.0.0.1.
  fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
  conformIdTokenClaims: !config.idTokenClaims,
  async findAccount(ctx, id) {
    const login = String(id);
    if (disabled.has(login)) return undefined;
    return {
      accountId: login,
      async claims() {
        return {
          sub: login,
          email: login.includes('@') ? login : `${login}@example.com`,
          email_verified: true,
          name: login,
          preferred_username: login.split('@')[0],
          groups: groups[login] ?? [],
          ...(accounts[login] ?? {}),
        };
      },
    };
  },
  ttl: { AccessToken: config.accessTokenTtl ?? 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
});

if (config.issuer) provider.proxy = true;

// oidc-provider's documented development override: implicit-flow web clients may use
// plain-http loopback redirect URIs (refused by default).
const { invalidate: originalInvalidate } = provider.Client.Schema.prototype;
provider.Client.Schema.prototype.invalidate = function invalidate(message, code) {
  if (code === 'implicit-force-https' || code === 'implicit-forbid-localhost') return;
  originalInvalidate.call(this, message);
};

provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('backchannel.success', (ctx, client) => console.log(`backchannel ok ${client.clientId}`));
provider.on('backchannel.error', (ctx, err, client) => console.log(`backchannel error ${client.clientId} ${err.message}`));
provider.on('grant.success', (ctx) => console.log(`grant ${ctx.oidc.params.grant_type}`));
provider.on('grant.error', (ctx, err) => console.log(`grant error ${ctx.oidc.params?.grant_type} ${err.error}`));

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/disable') {
    disabled.add(String(ctx.query.login));
    ctx.body = 'disabled';
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
