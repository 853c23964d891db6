// A real OpenID provider for the SSO tests: oidc-provider (a certified implementation) with its
// own users and groups, run by crates/cofre/tests/it/sso.rs.
//
//   node oidc-idp.mjs CONFIG.json
//
// CONFIG: {"client_id", "client_secret", "redirect_uris": [...], "accounts": "PATH.json"}.
// ACCOUNTS (read again at every login, so a test changes a user's groups by rewriting it):
//   {"alice": {"sub": "...", "preferred_username": "alice", "email": "...", "groups": [...]}}
// Prints {"issuer": "http://127.0.0.1:PORT"} once listening (the OS picks the port).
//
// What a test needs beyond a well-behaved provider, on a control path no client uses:
//   POST /__test/mode {"mode": "none" | "audience" | "expired" | "badsig" | "nonce" | "mfa"}:
//     from then on the token endpoint's ID token is re-signed with that one thing changed
//     (another audience, an expiry in the past, a key the JWKS does not publish under the same
//     kid, the nonce of the previous login; or, "mfa", an `amr` saying the provider did a second
//     factor), everything else as the provider made it;
//   POST /__test/rotate: a new signing key (new kid) replaces the old one, as a provider's key
//     rotation does; the JWKS then publishes only the new key.
// Loopback redirect URIs match on any port (RFC 8252 7.3), as Entra ID, Okta and Keycloak allow
// for native clients: oidc-provider does this only for clients of type "native", which may not
// also have the console's https redirect.

import http from 'node:http';
import fs from 'node:fs';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

async function newKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  jwk.kid = `k-${Date.now()}-${Math.random().toString(16).slice(2, 8)}`;
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  return jwk;
}

let mode = 'none';
let lastNonce = null;
let signingKey = await newKey();

function account(id) {
  const all = JSON.parse(fs.readFileSync(config.accounts, 'utf8'));
  return all[id];
}

function makeProvider(issuer, key) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [key] },
    cookies: { keys: ['cofre-test-cookie-key'] },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    // The claims in the ID token itself (as IdPs configured for groups do), not only userinfo.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const a = account(id);
      if (!a) return undefined;
      return {
        accountId: id,
        async claims() {
          return { ...a, sub: a.sub };
        },
      };
    },
  });
  const allowed = provider.Client.prototype.redirectUriAllowed;
  provider.Client.prototype.redirectUriAllowed = function (value) {
    if (allowed.call(this, value)) return true;
    try {
      const u = new URL(value);
      if (u.protocol === 'http:' && u.hostname === '127.0.0.1') {
        u.port = '';
        return this.redirectUris.includes(u.href);
      }
    } catch { /* not a URL */ }
    return false;
  };
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.method !== 'POST' || !ctx.body?.id_token) return;
    const claims = jose.decodeJwt(ctx.body.id_token);
    const nonce = claims.nonce;
    if (mode !== 'none') {
      let key = signingKey;
      if (mode === 'audience') claims.aud = 'someone-else';
      if (mode === 'expired') { claims.iat -= 7200; claims.exp = claims.iat + 60; }
      if (mode === 'nonce') claims.nonce = lastNonce ?? 'never-sent';
      if (mode === 'mfa') claims.amr = ['pwd', 'mfa'];
      if (mode === 'badsig') key = { ...(await newKey()), kid: signingKey.kid };
      const priv = await jose.importJWK(key, 'RS256');
      ctx.body.id_token = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
        .sign(priv);
    }
    lastNonce = nonce;
  });
  return provider;
}

let handler;
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/__test/')) {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', async () => {
      if (req.url === '/__test/mode') {
        mode = JSON.parse(body || '{}').mode ?? 'none';
      } else if (req.url === '/__test/rotate') {
        signingKey = await newKey();
        handler = makeProvider(issuer, signingKey).callback();
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ mode, kid: signingKey.kid }));
    });
    return;
  }
  handler(req, res);
});
let issuer;
server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  handler = makeProvider(issuer, signingKey).callback();
  console.log(JSON.stringify({ issuer }));
});
