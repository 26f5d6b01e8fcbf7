// A real OpenID Connect provider for the sign-in tests: oidc-provider (OpenID Certified), on loopback, over http.
//
// `node provider.mjs` with, in the environment:
//   OIDC_PORT            the port to listen on (127.0.0.1)
//   OIDC_CLIENT_ID       the dashboard's client id
//   OIDC_CLIENT_SECRET   its secret
//   OIDC_REDIRECT_URIS   space-separated redirect URIs (the dashboard's <public url>/oauth2callback); also the
//                        addresses the provider may send a user back to after signing out
//   OIDC_ID_TOKEN_TTL    seconds an ID token is valid (default 3600)
// The users, their passwords and groups are in users.json beside this file. Each ID token carries sub (the
// username), name, email and a `groups` claim. Prints "ready <issuer>" once it listens; stops on SIGTERM.
//
// The login page is ours, minimal: a username and a password, checked against users.json, then oidc-provider's
// interactionFinished. The dashboard is a first-party client, so consent is given without a page. Sign-out
// (RP-initiated logout) ends the provider's session without asking "Do you want to sign out?": the dashboard's
// Sign out button is the question.
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`provider: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const port = Number(env('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = env('OIDC_REDIRECT_URIS').split(/\s+/).filter(Boolean);
const users = JSON.parse(readFileSync(new URL('./users.json', import.meta.url), 'utf8'));

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' };

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const configuration = {
  clients: [{
    client_id: env('OIDC_CLIENT_ID'),
    client_secret: env('OIDC_CLIENT_SECRET'),
    redirect_uris: redirectUris,
    post_logout_redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  // The ID token carries the scopes' claims (not only the userinfo endpoint), as Keycloak, Entra and Okta do
  // for the claims configured on the client: the dashboard reads the ID token only.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: user.name, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = `<!DOCTYPE html><html><head><title>Signing out</title></head><body>
          ${form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')}
          <script>document.forms[0].submit()</script></body></html>`;
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    IdToken: Number(env('OIDC_ID_TOKEN_TTL', '3600')),
    AccessToken: 3600,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('provider: server error', error));

function loginPage(uid, message) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Test provider: sign in</title></head><body>
    <h1>Test provider</h1>
    ${message ? `<p role="alert">${escape(message)}</p>` : ''}
    <form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
      <label>Username <input name="username" autofocus></label>
      <label>Password <input name="password" type="password"></label>
      <button type="submit">Sign in</button>
    </form></body></html>`;
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params, session, grantId } = details;
  if (prompt.name === 'consent') { // a first-party client: what it asks is granted
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, {
      mergeWithLastSubmission: true,
    });
    return;
  }
  if (prompt.name !== 'login') throw new Error(`unexpected prompt ${prompt.name}`);
  if (action === 'login' && req.method === 'POST') {
    const form = await formBody(req);
    const username = form.get('username') ?? '';
    const user = Object.hasOwn(users, username) ? users[username] : undefined;
    if (user && form.get('password') === user.password) {
      await provider.interactionFinished(req, res, { login: { accountId: username } }, {
        mergeWithLastSubmission: false,
      });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(loginPage(uid, 'Wrong username or password.'));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(loginPage(uid));
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login))?(?:\?.*)?$/.exec(req.url);
  if (!match) {
    handle(req, res);
    return;
  }
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (error) {
    console.error('provider: interaction failed', error);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${error.message}`);
  }
});

server.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
