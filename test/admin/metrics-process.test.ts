// /metrics of a real tandem with two workers, after real traffic: proxied requests with
// bodies both ways, a 502 from a dead backend (and its ejection), a retry, a WebSocket
// upgrade, a request no route matches, and a backend taken down and back up by active
// health checks. Every series operators and the dashboard rely on must be there with
// values that follow from that traffic, promtool must find nothing to say about the
// text, a reload must take the series of what it removed away, and a worker's death
// must not change any count.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { config } from '../helpers/config.ts';
import { declared, find, parse, promtoolCheckMetrics, promtoolMissing, TANDEM_METRICS, total, value, type Series } from '../helpers/prom.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const noPromtool = skipUnlessCi(await promtoolMissing());

const BODY = 1000;
const UPLOAD = 5000;

/** A backend answering BODY bytes to everything but /healthz, which answers `health`. */
class App {
  health = 200;
  requests = 0;
  readonly server: Server;
  constructor(server: Server) {
    this.server = server;
    server.on('request', (req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.url === '/healthz') {
          res.writeHead(this.health, { 'content-length': 2 });
          res.end('ok');
          return;
        }
        this.requests++;
        res.writeHead(200, { 'content-length': BODY });
        res.end(Buffer.alloc(BODY, 'x'));
      });
    });
  }
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
}

async function listen(server: Server): Promise<Server> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** A loopback address nothing listens on. */
async function deadUrl(): Promise<string> {
  const s = await listen(createServer());
  const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  await new Promise((r) => s.close(r));
  return url;
}

/** One request on a connection of its own, so that the kernel spreads them over the workers. */
async function send(url: string, opts: { method?: 'GET' | 'POST'; body?: Buffer } = {}): Promise<{ status: number; bytes: number }> {
  const res = await request(url, { method: opts.method ?? 'GET', body: opts.body, reset: true });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, bytes: body.length };
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('/metrics of tandem with two workers, after real traffic', () => {
  const servers: Server[] = [];
  let b1: App;
  let b2: App;
  let wss: WebSocketServer;
  let t: TandemProcess;
  let yaml: (keepOld: boolean) => string;
  let ws: WebSocket | null = null;
  /** What the traffic below got back. */
  const sent = { requests: 0, appOk: 0, appBodies: 0, uploaded: 0, retryOk: 0, dead: 0 };
  let downFor = 0;
  let started = 0;

  const scrapeText = async () => {
    const res = await fetch(`${t.admin}/metrics`);
    assert.equal(res.status, 200);
    return res.text();
  };
  const scrape = async () => parse(await scrapeText());

  before(async () => {
    b1 = new App(await listen(createServer()));
    b2 = new App(await listen(createServer()));
    const old = new App(await listen(createServer()));
    const wsServer = await listen(createServer());
    wss = new WebSocketServer({ server: wsServer });
    wss.on('connection', (sock) => sock.on('message', (data) => sock.send(data)));
    servers.push(b1.server, b2.server, old.server, wsServer);
    const [gone, gone2] = [await deadUrl(), await deadUrl()];
    yaml = (keepOld) => config({
      workers: 2,
      routes: [
        ...(keepOld ? [{ name: 'old', match: { pathPrefix: '/old' }, pool: 'old' }] : []),
        { name: 'dead', match: { pathPrefix: '/dead' }, pool: 'dead' },
        { name: 'retry', match: { pathPrefix: '/retry' }, pool: 'retry' },
        { name: 'ws', match: { pathPrefix: '/ws' }, pool: 'ws' },
        { name: 'app', match: { pathPrefix: '/app' }, pool: 'web' },
      ],
      pools: {
        web: {
          backends: [{ name: 'b1', url: b1.url, weight: 2 }, ...(keepOld ? [{ name: 'b2', url: b2.url }] : [])],
          // Two failures in a row: a check that a busy machine delays past its timeout once does not count.
          healthCheck: { path: '/healthz', interval: '250ms', timeout: '200ms', rise: 1, fall: 2 },
          retries: 0,
        },
        dead: { backends: [{ name: 'gone', url: gone }], retries: 0, outlier: { consecutiveFailures: 2, ejectFor: '60s' } },
        retry: { backends: [{ name: 'gone', url: gone2 }, { name: 'r1', url: b1.url }], retries: 1 },
        ws: { backends: [{ name: 'w1', url: `http://127.0.0.1:${(wsServer.address() as AddressInfo).port}` }] },
        ...(keepOld ? { old: { backends: [{ name: 'o1', url: old.url }] } } : {}),
      },
    });
    t = await startTandem(yaml(true));
    started = Date.now();

    for (let i = 0; i < 20; i++) {
      const r = await send(`${t.url}/app/${i}`);
      sent.requests++;
      if (r.status === 200) sent.appOk++;
      sent.appBodies += r.bytes;
    }
    for (let i = 0; i < 3; i++) {
      const r = await send(`${t.url}/app/upload`, { method: 'POST', body: Buffer.alloc(UPLOAD, 'u') });
      sent.requests++;
      if (r.status === 200) sent.appOk++;
      sent.appBodies += r.bytes;
      sent.uploaded += UPLOAD;
    }
    for (let i = 0; i < 10; i++) {
      if ((await send(`${t.url}/retry`)).status === 200) sent.retryOk++;
      sent.requests++;
    }
    for (let i = 0; i < 10; i++) {
      const r = await send(`${t.url}/dead`);
      assert.ok(r.status === 502 || r.status === 503, `a dead backend: ${r.status}`);
      sent.dead++;
      sent.requests++;
    }
    assert.equal((await send(`${t.url}/nothing`)).status, 404);
    sent.requests++;
    for (let i = 0; i < 4; i++) {
      assert.equal((await send(`${t.url}/old`)).status, 200);
      sent.requests++;
    }

    // Upgrades a plain backend answers without switching, and one no route matches.
    for (const path of ['/app/ws', '/nothing/ws']) {
      const refused = new WebSocket(`ws://${t.listeners.get('web')}${path}`);
      const [err] = await once(refused, 'error') as [Error];
      assert.match(err.message, /Unexpected server response: (200|404)/);
    }
    ws = new WebSocket(`ws://${t.listeners.get('web')}/ws`);
    await once(ws, 'open');
    ws.send('ping');
    await once(ws, 'message');

    // b2 fails its checks until tandem takes it down, stays down a while, then passes again.
    const state = async (want: string) => value(await scrape(), 'tandem_backend_state', { pool: 'web', backend: 'b2', state: want }) === 1;
    b2.health = 500;
    await until(() => state('down'), 10_000, 'b2 to go down');
    const downAt = Date.now();
    await new Promise((r) => setTimeout(r, 500));
    b2.health = 200;
    await until(() => state('up'), 10_000, 'b2 to come back up');
    downFor = (Date.now() - downAt) / 1000;
    // The ejection of the dead backend reaches the control plane in a message of its own.
    await until(async () => value(await scrape(), 'tandem_backend_ejections_total', { pool: 'dead', backend: 'gone' }) >= 1, 10_000, 'the ejection');
  });

  after(async () => {
    ws?.terminate();
    await t?.stop('SIGKILL');
    wss?.close();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  test('every tandem metric is declared once, with its type', async () => {
    const types = declared(await scrapeText());
    for (const [name, type] of Object.entries(TANDEM_METRICS)) assert.equal(types.get(name), type, name);
    const ours = [...types.keys()].filter((n) => n.startsWith('tandem_')).sort();
    assert.deepEqual(ours, Object.keys(TANDEM_METRICS).sort(), 'docs/admin-api.md lists every metric; add a new one there and here');
  });

  test('the request series count every request of every worker exactly once', async () => {
    const s = await scrape();
    assert.equal(total(s, 'tandem_requests_total'), sent.requests);
    assert.equal(total(s, 'tandem_request_duration_seconds_count'), sent.requests);
    assert.equal(total(s, 'tandem_requests_total', { route: 'app', code: '200' }), 23);
    assert.equal(sent.appOk, 23);
    assert.equal(value(s, 'tandem_requests_total', { listener: 'web', route: '', pool: '', backend: '', code: '404' }), 1);
    assert.equal(value(s, 'tandem_build_info', { version: pkg.version, node_version: process.versions.node }), 1);
  });

  test('bytes both ways, retries, errors by code, time to the response head and upgrades', async () => {
    const s = await scrape();
    const app = { listener: 'web', route: 'app', pool: 'web' };
    assert.equal(value(s, 'tandem_response_bytes_total', app), sent.appBodies);
    assert.ok(sent.appBodies >= 23 * BODY);
    assert.equal(value(s, 'tandem_request_bytes_total', app), sent.uploaded);
    assert.equal(value(s, 'tandem_request_bytes_total', { listener: 'web', route: 'retry', pool: 'retry' }), 0);

    // Round robin over a dead and a live backend: every other pick of each worker is the
    // dead one, and the request goes on to the live one.
    assert.equal(sent.retryOk, 10);
    const retries = value(s, 'tandem_retries_total', { pool: 'retry' });
    assert.ok(retries >= 1 && retries <= 10, `retries: ${retries}`);
    assert.equal(value(s, 'tandem_retries_total', { pool: 'web' }), 0);

    const unreachable = value(s, 'tandem_proxy_errors_total', { pool: 'dead', code: 'TANDEM_ERR_BACKEND_UNREACHABLE' });
    const noBackend = find(s, 'tandem_proxy_errors_total', { pool: 'dead', code: 'TANDEM_ERR_NO_BACKEND' })[0]?.value ?? 0;
    assert.ok(unreachable >= 2, `two failures in a row eject: ${unreachable}`);
    assert.equal(unreachable + noBackend, sent.dead);
    assert.equal(total(s, 'tandem_requests_total', { pool: 'dead', code: '502' }), unreachable);
    assert.equal(value(s, 'tandem_proxy_errors_total', { pool: '', code: 'TANDEM_ERR_NO_ROUTE' }), 2, 'a request and an upgrade');
    for (const e of find(s, 'tandem_proxy_errors_total')) assert.match(e.labels.code, /^TANDEM_ERR_[A-Z_]+$/);

    const heads = total(s, 'tandem_upstream_response_seconds_count', { pool: 'web' });
    assert.equal(heads, 23);
    assert.ok(total(s, 'tandem_upstream_response_seconds_sum', { pool: 'web' }) > 0);
    assert.equal(value(s, 'tandem_upstream_response_seconds_count', { pool: 'retry', backend: 'r1' }), 10);
    assert.equal(value(s, 'tandem_upstream_response_seconds_count', { pool: 'dead', backend: 'gone' }), 0, 'no head ever came from the dead backend');
    const inf = value(s, 'tandem_upstream_response_seconds_bucket', { pool: 'web', backend: 'b1', le: '+Inf' });
    assert.equal(inf, value(s, 'tandem_upstream_response_seconds_count', { pool: 'web', backend: 'b1' }));

    assert.equal(value(s, 'tandem_upgrades_total', { listener: 'web', route: 'ws', pool: 'ws', result: 'success' }), 1);
    assert.equal(value(s, 'tandem_upgrades_total', { listener: 'web', route: 'app', pool: 'web', result: 'refused' }), 1);
    assert.equal(value(s, 'tandem_upgrades_total', { listener: 'web', route: '', pool: '', result: 'error' }), 1);
    assert.equal(total(s, 'tandem_upgrades_total'), 3);
    assert.ok(value(s, 'tandem_listener_connections', { listener: 'web' }) >= 1, 'the WebSocket is open');
  });

  test('backend state, weight, transitions, downtime, ejections and health check durations', async () => {
    // Both web backends up (a check delayed on a busy machine may have taken one down for a moment).
    let s = await scrape();
    await until(async () => value(s = await scrape(), 'tandem_pool_available_backends', { pool: 'web' }) === 2, 10_000, 'both web backends up');
    for (const b of find(s, 'tandem_backend_up')) {
      const states = find(s, 'tandem_backend_state', { pool: b.labels.pool, backend: b.labels.backend });
      assert.deepEqual(states.map((x) => x.labels.state).sort(), ['disabled', 'down', 'draining', 'ejected', 'up']);
      assert.equal(states.reduce((n, x) => n + x.value, 0), 1, `one state at a time: ${b.labels.pool}/${b.labels.backend}`);
    }
    assert.equal(value(s, 'tandem_backend_state', { pool: 'web', backend: 'b2', state: 'up' }), 1);
    assert.equal(value(s, 'tandem_backend_state', { pool: 'dead', backend: 'gone', state: 'ejected' }), 1);
    assert.equal(value(s, 'tandem_backend_weight', { pool: 'web', backend: 'b1' }), 2);
    assert.equal(value(s, 'tandem_backend_weight', { pool: 'web', backend: 'b2' }), 1);
    assert.equal(value(s, 'tandem_pool_available_backends', { pool: 'web' }), 2);
    assert.equal(value(s, 'tandem_pool_available_backends', { pool: 'dead' }), 0);

    // b2 went down at least once (the test took it down; a busy machine may have added a
    // failed pair of checks) and came back up as often: it started up and is up now.
    const b2 = { pool: 'web', backend: 'b2' };
    const downs = value(s, 'tandem_backend_transitions_total', { ...b2, to: 'down' });
    assert.ok(downs >= 1, `b2 went down ${downs} times`);
    assert.equal(value(s, 'tandem_backend_transitions_total', { ...b2, to: 'up' }), downs);
    assert.equal(value(s, 'tandem_backend_transitions_total', { ...b2, to: 'disabled' }), 0);
    assert.equal(value(s, 'tandem_backend_transitions_total', { pool: 'dead', backend: 'gone', to: 'ejected' }), 1);
    const downtime = value(s, 'tandem_backend_downtime_seconds_total', b2);
    const alive = (Date.now() - started) / 1000;
    assert.ok(downtime >= 0.4 && downtime >= downFor - 1 && downtime < alive, `downtime ${downtime} s, down for about ${downFor} s, up ${alive} s`);
    assert.equal(value(s, 'tandem_backend_downtime_seconds_total', { pool: 'retry', backend: 'r1' }), 0, 'no checks, never down');
    assert.ok(value(s, 'tandem_backend_downtime_seconds_total', { pool: 'dead', backend: 'gone' }) > 0, 'ejected time counts');
    assert.ok(value(s, 'tandem_backend_ejections_total', { pool: 'dead', backend: 'gone' }) >= 1);
    assert.equal(value(s, 'tandem_backend_ejections_total', b2), 0);

    assert.ok(value(s, 'tandem_health_checks_total', { ...b2, result: 'failure' }) >= 1);
    const checks = value(s, 'tandem_backend_check_duration_seconds_count', b2);
    assert.equal(checks, value(s, 'tandem_health_checks_total', { ...b2, result: 'success' }) + value(s, 'tandem_health_checks_total', { ...b2, result: 'failure' }));
    assert.ok(value(s, 'tandem_backend_check_duration_seconds_sum', b2) > 0);
    assert.equal(find(s, 'tandem_backend_check_duration_seconds_count', { pool: 'dead' }).length, 0, 'a pool without checks has no check histogram');

    assert.equal(value(s, 'tandem_config_reloads_total', { result: 'success' }), 0);
    assert.equal(value(s, 'tandem_config_last_reload_successful', {}), 1);
  });

  test('promtool check metrics finds nothing to say', { skip: noPromtool }, async () => {
    const r = await promtoolCheckMetrics(await scrapeText());
    assert.equal(r.output, '');
    assert.equal(r.code, 0);
  });

  test('a reload that removes a route, a pool and a backend removes their series; the rest count on', async () => {
    ws!.close();
    await once(ws!, 'close');
    const before = await scrape();
    const removed = (x: Series) => x.labels.route === 'old' || x.labels.pool === 'old' || x.labels.backend === 'b2';
    assert.ok(before.some(removed));
    const kept = before.filter((x) => x.name === 'tandem_requests_total' && !removed(x)).reduce((n, x) => n + x.value, 0);
    assert.match(await t.reload(yaml(false)), /reloaded/);
    const s = await scrape();
    assert.deepEqual(s.filter(removed), []);
    assert.equal(total(s, 'tandem_requests_total'), kept);
    assert.equal(value(s, 'tandem_config_reloads_total', { result: 'success' }), 1);
    assert.equal(value(s, 'tandem_backend_weight', { pool: 'web', backend: 'b1' }), 2);
    if (noPromtool === false) assert.deepEqual(await promtoolCheckMetrics(await scrapeText()), { code: 0, output: '' });

    // A reload that fails changes no series but says so.
    assert.match(await t.reload('listeners: [oops'), /reload rejected/);
    const failed = await scrape();
    assert.equal(value(failed, 'tandem_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(value(failed, 'tandem_config_last_reload_successful', {}), 0);
    assert.equal(total(failed, 'tandem_requests_total'), kept);
  });

  test('a worker killed with SIGKILL takes no count with it', async () => {
    const counters = (s: Series[]) => s.filter((x) => /^tandem_(requests|request_bytes|response_bytes|retries|proxy_errors|upgrades)_total$|_count$|_bucket$/.test(x.name)
      && !x.name.startsWith('tandem_backend_check') && !x.name.startsWith('nodejs_'))
      .map((x) => `${x.name}${JSON.stringify(x.labels)} ${x.value}`).sort();
    const before = counters(await scrape());
    const [victim] = t.workerPids();
    const from = t.lines().length;
    process.kill(victim, 'SIGKILL');
    await t.waitForLine((l) => l.event === 'worker-exit' && l.workerPid === victim, { from });
    await t.waitForLine((l) => l.event === 'worker-start', { from });
    assert.deepEqual(counters(await scrape()), before);
  });
});
