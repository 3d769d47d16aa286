// gRPC fake of Scalekit for bench/latency.lua, built from the official SDK's own
// service descriptors (@scalekit-sdk/node) with @connectrpc/connect-node: TLS,
// HTTP/2 by ALPN for gRPC and HTTP/1.1 for the OAuth token endpoint (as the SDK
// fetches its token with axios). Every answer takes LATENCY_MS.
//   node fake.js <port> <cert.pem> <key.pem> [latency_ms]   -> prints "ready"
'use strict';
const http2 = require('http2');
const fs = require('fs');
const { connectNodeAdapter } = require('@connectrpc/connect-node');
const { ConnectError, Code } = require('@connectrpc/connect');
const { OrganizationService } = require('@scalekit-sdk/node/lib/pkg/grpc/scalekit/v1/organizations/organizations_pb');

const [port, cert, key, latencyArg] = process.argv.slice(2);
const LATENCY_MS = Number(latencyArg || 20);
const TOKEN = 'bench-token-' + process.pid;
const stats = { tokens: 0, calls: 0, sessions: 0 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const adapter = connectNodeAdapter({
  routes: (router) => router.service(OrganizationService, {
    async getOrganization(req, ctx) {
      stats.calls++;
      await sleep(LATENCY_MS);
      if (ctx.requestHeader.get('authorization') !== 'Bearer ' + TOKEN) {
        throw new ConnectError('token is invalid or expired', Code.Unauthenticated);
      }
      return { organization: { id: req.id, displayName: 'Bench Corp', externalId: 'bench',
                               regionCode: 1, metadata: { tier: 'gold', region: 'eu' } } };
    },
  }),
});

const server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key),
                                          allowHTTP1: true }, (req, res) => {
  if (req.url === '/oauth/token') {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', async () => {
      stats.tokens++;
      await sleep(LATENCY_MS);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ access_token: TOKEN, token_type: 'Bearer', expires_in: 86399 }));
    });
    return;
  }
  if (req.url === '/_stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  adapter(req, res);
});
server.on('session', () => { stats.sessions++; });
server.on('secureConnection', () => { stats.connections = (stats.connections || 0) + 1; });
server.listen(Number(port), '127.0.0.1', () => console.log('ready'));
