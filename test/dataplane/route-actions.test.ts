import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// A backend that answers with what it received, and with headers a rule can remove.
let echo: Server;
let t: TandemProcess;

before(async () => {
  echo = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ url: req.url, headers: req.headers, raw: req.rawHeaders });
    res.writeHead(200, { 'content-type': 'application/json', server: 'echo/1.0', 'x-powered-by': 'node', 'x-keep': 'yes' });
    res.end(body);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
  t = await startTandem(config({
    routes: [
      { name: 'to-https', match: { host: 'plain.test' }, pool: 'echo', redirect: { scheme: 'https', code: 301 } },
      { name: 'moved', match: { pathPrefix: '/old' }, pool: 'echo', redirect: { host: 'new.test', path: '/new', code: 308 } },
      { name: 'inside', match: { pathPrefix: '/internal' }, pool: 'echo', allow: ['10.0.0.0/8', 'fd00::/8'] },
      { name: 'local', match: { pathPrefix: '/local' }, pool: 'echo', allow: ['127.0.0.0/8', '::1'] },
      { name: 'api', match: { pathPrefix: '/api' }, pool: 'echo', rewrite: { stripPrefix: '/api', addPrefix: '/v2/' },
        headers: {
          request: { set: { 'X-Route': 'api', 'x-forwarded-proto': 'https' }, remove: ['cookie', 'X-Debug'] },
          response: { set: { 'strict-transport-security': 'max-age=63072000' }, remove: ['server', 'X-Powered-By'] },
        } },
      { name: 'rest', match: { pathPrefix: '/' }, pool: 'echo' },
    ],
    pools: { echo: { backends: [{ name: 'echo', url }] } },
  }));
});

after(async () => {
  await t?.stop();
  await new Promise((resolve) => echo?.close(resolve));
});

test('redirect to https keeps the host and path, drops the plain port', async () => {
  const r = await request(`${t.url}/a/b?x=1`, { headers: { host: 'plain.test:8080' } });
  await r.body.dump();
  assert.equal(r.statusCode, 301);
  assert.equal(r.headers.location, 'https://plain.test/a/b?x=1');
});

test('redirect to another host and path keeps the query', async () => {
  const r = await request(`${t.url}/old/page?q=2`, { headers: { host: 'site.test' } });
  await r.body.dump();
  assert.equal(r.statusCode, 308);
  assert.equal(r.headers.location, 'http://new.test/new?q=2');
});

test('allow: a client outside the list gets 403, one inside reaches the backend', async () => {
  const denied = await request(`${t.url}/internal/x`);
  assert.equal(denied.statusCode, 403);
  assert.equal(((await denied.body.json()) as { error: string }).error, 'TANDEM_ERR_FORBIDDEN');
  const allowed = await request(`${t.url}/local/x`);
  assert.equal(allowed.statusCode, 200);
  assert.equal(((await allowed.body.json()) as { url: string }).url, '/local/x');
});

test('rewrite strips and adds prefixes on segment boundaries; header rules apply both ways', async () => {
  const r = await request(`${t.url}/api/users?id=7`, { headers: { cookie: 'a=1', 'x-debug': '1', 'x-route': 'client', 'x-other': 'kept' } });
  assert.equal(r.statusCode, 200);
  assert.equal(r.headers['strict-transport-security'], 'max-age=63072000');
  assert.equal(r.headers.server, undefined);
  assert.equal(r.headers['x-powered-by'], undefined);
  assert.equal(r.headers['x-keep'], 'yes');
  const seen = (await r.body.json()) as { url: string; headers: Record<string, string> };
  assert.equal(seen.url, '/v2/users?id=7');
  assert.equal(seen.headers['x-route'], 'api');
  assert.equal(seen.headers['x-forwarded-proto'], 'https');
  assert.equal(seen.headers['x-other'], 'kept');
  assert.equal(seen.headers.cookie, undefined);
  assert.equal(seen.headers['x-debug'], undefined);
  assert.match(seen.headers.host, /^127\.0\.0\.1:\d+$/);

  const bare = await request(`${t.url}/api`);
  assert.equal(((await bare.body.json()) as { url: string }).url, '/v2/');
  // /apix is not under /api: the api route matches it by prefix, but nothing is stripped.
  const other = await request(`${t.url}/apix`);
  assert.equal(((await other.body.json()) as { url: string }).url, '/v2/apix');
});

test('routes without actions pass requests and responses unchanged', async () => {
  const r = await request(`${t.url}/plain?x=1`, { headers: { cookie: 'a=1' } });
  assert.equal(r.headers.server, 'echo/1.0');
  const seen = (await r.body.json()) as { url: string; headers: Record<string, string> };
  assert.equal(seen.url, '/plain?x=1');
  assert.equal(seen.headers.cookie, 'a=1');
});
