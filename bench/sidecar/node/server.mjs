// The seed design: an Express app that verifies the Bearer token with jose
// (local JWKS, RS256) and proxies the request to the backend.
import fs from 'node:fs';
import http from 'node:http';
import express from 'express';
import { createLocalJWKSet, jwtVerify } from 'jose';

const [jwksPath, port, upstreamPort] = process.argv.slice(2);
const jwks = createLocalJWKSet(JSON.parse(fs.readFileSync(jwksPath, 'utf8')));
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const app = express();

app.use(async (req, res) => {
  const m = /^Bearer (.+)$/i.exec(req.headers.authorization || '');
  if (!m) return res.status(401).end();
  let payload;
  try {
    ({ payload } = await jwtVerify(m[1], jwks, {
      issuer: 'https://issuer.bench', audience: 'orders', algorithms: ['RS256'],
    }));
  } catch {
    return res.status(401).end();
  }
  const headers = { ...req.headers, 'x-sigil-subject': payload.sub };
  delete headers.authorization;
  const up = http.request({ host: '127.0.0.1', port: upstreamPort, path: req.url, method: req.method, headers, agent },
    (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
  up.on('error', () => res.status(502).end());
  req.pipe(up);
});

app.listen(Number(port), '127.0.0.1');
