// Verifies a Portcullis identity assertion the way an app would, with panva's `jose`
// (installed with the test OpenID provider), independently of Portcullis's own code:
//
//   node tests/jwt/verify.mjs <jwks-url> <token> <issuer> <audience> [seconds-later]
//
// Prints the verified claims as JSON, or "refused: <reason>" and exits 1. With
// seconds-later, verifies as if that many seconds had passed (to check expiry).
import { createRemoteJWKSet, jwtVerify } from '../oidc-provider/node_modules/jose/dist/webapi/index.js';

const [jwksUrl, token, issuer, audience, later] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUrl));
try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: ['ES256'],
    currentDate: new Date(Date.now() + 1000 * Number(later ?? 0)),
  });
  console.log(JSON.stringify({ header: protectedHeader, claims: payload }));
} catch (e) {
  console.log(`refused: ${e.code ?? e.message}`);
  process.exit(1);
}
