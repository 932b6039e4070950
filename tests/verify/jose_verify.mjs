// Verifies tokens with Node's `jose`, knowing only the published JWKS.
// argv: JWKS URL, issuer, algorithm; stdin: a JSON list of tokens; stdout: a JSON list of
// {ok, payload} or {ok: false, code}.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, algorithm] = process.argv.slice(2);
let input = '';
for await (const chunk of process.stdin) input += chunk;

const jwks = createRemoteJWKSet(new URL(jwksUrl));
const results = [];
for (const token of JSON.parse(input)) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer,
      typ: 'at+jwt',
      algorithms: [algorithm],
      requiredClaims: ['sub', 'sid', 'jti', 'iat', 'exp'],
    });
    results.push({ ok: true, payload, header: protectedHeader });
  } catch (error) {
    results.push({ ok: false, code: error.code ?? error.name });
  }
}
process.stdout.write(JSON.stringify(results));
