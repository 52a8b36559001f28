// Development OpenID Connect provider for the orchgate demo stack and integration tests.
// NEVER expose it outside them: it approves every CIBA request for a configured user.
//
//   node deploy/dev-idp/server.mjs --config PATH
//
// PATH is a JSON file (see DESIGN.md section 6 and deploy/local/idp_client.py):
//   {"host", "port", "issuer", "audience", "access_token_ttl",
//    "clients": [{"client_id", "client_secret", "kind": "human-login" | "service"}],
//    "users": [{"sub", "email", "name", "groups": [...]}],
//    "keys_file": private JWKS path (relative paths resolve against the config file)}
//
// stdout carries exactly one line, `READY <issuer>`, once the port is bound; everything
// else goes to stderr.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its "you SHOULD change ..." notices with console.info (stdout,
// lib/helpers/attention.js); keep stdout for the READY line that callers wait for.
console.info = console.warn;

const CIBA_GRANT = 'urn:openid:params:grant-type:ciba';
const RS_SCOPE = 'openid profile email groups api';

function loadConfig(path) {
  const config = JSON.parse(readFileSync(path, 'utf8'));
  for (const key of ['host', 'port', 'issuer', 'audience', 'access_token_ttl', 'clients', 'users', 'keys_file']) {
    if (config[key] === undefined) throw new Error(`${path}: missing key "${key}"`);
  }
  for (const client of config.clients) {
    if (!['human-login', 'service'].includes(client.kind)) {
      throw new Error(`${path}: client "${client.client_id}" has unknown kind "${client.kind}"`);
    }
  }
  config.keys_file = resolve(dirname(path), config.keys_file);
  return config;
}

// The signing keys outlive restarts so tokens issued before a restart still verify.
// A fresh key is written with mode 0600 and never committed.
async function loadOrCreateKeys(path) {
  if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8'));
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  const key = { ...jwk, kid: await jose.calculateJwkThumbprint(jwk), alg: 'RS256', use: 'sig' };
  const jwks = { keys: [key] };
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, JSON.stringify(jwks), { mode: 0o600, flag: 'wx' });
  return jwks;
}

// Client metadata per kind. No client may use authorization_code or refresh_token, so
// there are no redirect URIs, no login pages and no refresh tokens (issueRefreshToken
// requires the refresh_token grant). client_secret_basic clients may also send their
// secret in the body: oidc-provider accepts both for either method (lib/shared/client_auth.js).
function clientMetadata({ client_id, client_secret, kind }) {
  const common = {
    client_id,
    client_secret,
    token_endpoint_auth_method: 'client_secret_basic',
    response_types: [],
    redirect_uris: [],
  };
  if (kind === 'service') return { ...common, grant_types: ['client_credentials'] };
  return { ...common, grant_types: [CIBA_GRANT], backchannel_token_delivery_mode: 'poll' };
}

const { values: args } = parseArgs({ options: { config: { type: 'string' } } });
if (!args.config) {
  console.error('usage: node server.mjs --config PATH');
  process.exit(2);
}
const config = loadConfig(args.config);
const users = new Map(config.users.map((user) => [user.sub, user]));
const ttl = () => config.access_token_ttl;

// Resource indicators must be absolute URIs (RFC 8707; lib/shared/check_resource.js rejects
// anything else with invalid_target), while the JWT `aud` is the bare audience string. So the
// single resource server gets a URN identifier unless the audience already is a URI.
const resource = URL.canParse(config.audience) ? config.audience : `urn:orchgate:audience:${config.audience}`;

const provider = new Provider(config.issuer, {
  clients: config.clients.map(clientMetadata),
  jwks: await loadOrCreateKeys(config.keys_file),

  // Scopes named in `claims` are registered automatically; `api` is the resource scope.
  scopes: ['openid', 'api'],
  claims: { openid: ['sub'], email: ['email'], profile: ['name'], groups: ['groups'] },

  async findAccount(_ctx, sub) {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, email: user.email, name: user.name, groups: user.groups }),
    };
  },

  // Claims added to access tokens. Client-credentials tokens have no accountId; their
  // `sub` is the client_id (lib/models/formats/jwt.js: `sub: sub || clientId`).
  async extraTokenClaims(_ctx, token) {
    const user = token.accountId && users.get(token.accountId);
    if (!user) return {};
    return { groups: user.groups, email: user.email, name: user.name };
  },

  // oidc-provider calls every TTL as a function (ttl configuration section).
  ttl: {
    AccessToken: ttl,
    ClientCredentials: ttl,
    IdToken: ttl,
    Grant: ttl,
    BackchannelAuthenticationRequest: () => 60,
  },

  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },

    // Access tokens are JWTs only for a resource server with accessTokenFormat 'jwt'
    // (features.resourceIndicators). Every token request defaults to our one resource,
    // including the CIBA token request, which reuses the granted resource.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      async getResourceServerInfo(_ctx, indicator) {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: RS_SCOPE,
          audience: config.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: config.access_token_ttl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },

    // Humans without a browser: CIBA in poll mode (features.ciba). Dev only: the request
    // is approved on the spot, so the first token poll already succeeds.
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      processLoginHint: (_ctx, loginHint) => (users.has(loginHint) ? loginHint : undefined),
      // login_hint_token is unsupported: answer unknown_user_id, not the default's 500.
      processLoginHintToken: () => undefined,
      validateBindingMessage: () => {},
      validateRequestContext: () => {},
      verifyUserCode: () => {},
      async triggerAuthenticationDevice(_ctx, request, account, client) {
        const grant = new provider.Grant({ accountId: account.accountId, clientId: client.clientId });
        grant.addOIDCScope(request.scope);
        grant.addResourceScope(request.resource, request.scope); // always our one resource
        await grant.save();
        await provider.backchannelResult(request, grant);
      },
    },
  },
});

const server = provider.listen(config.port, config.host, () => {
  process.stdout.write(`READY ${config.issuer}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
