import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { connectionsTo, getMany, getRetrying, requestsTotal, servedBy, startPeerBackend, until, type PeerBackend } from './support.ts';

const procs: TandemProcess[] = [];
const backends: PeerBackend[] = [];
const servers: Server[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await Promise.all(backends.map((b) => b.close()));
  for (const s of servers) s.close();
});

async function twoBackends(): Promise<[PeerBackend, PeerBackend]> {
  const pair = await Promise.all([startPeerBackend('b1'), startPeerBackend('b2')]);
  backends.push(...pair);
  return pair;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** The config with b1 and b2 at these weights, two workers, and `extra` merged over the top level. */
function weighted(b1: PeerBackend, b2: PeerBackend, w1: number, w2: number, extra: Record<string, unknown> = {}): string {
  return singlePool([{ name: 'b1', url: b1.url, weight: w1 }, { name: 'b2', url: b2.url, weight: w2 }], {}, { workers: 2, ...extra });
}

// The same tests with the data plane in the primary (--workers 0), in one worker and in two.
for (const workers of [0, 1, 2]) {
const args = ['--workers', String(workers)];
/** Data planes that serve: the primary's own with --workers 0. */
const planes = Math.max(1, workers);
describe(`reload and shutdown, --workers ${workers}`, () => {
  test('a reload with changed weights applies in every worker', async () => {
    const [b1, b2] = await twoBackends();
    const t = await startTandem(weighted(b1, b2, 1, 1), { args });
    procs.push(t);
    const before = await getMany(t.url, 20);
    assert.deepEqual([...new Set(before.map((a) => a.backend))].sort(), ['b1', 'b2']);

    assert.equal(await t.reload(weighted(b1, b2, 0, 1)), 'reloaded');
    const answers = await getMany(t.url, 30);
    assert.deepEqual([...new Set(answers.map((a) => a.backend))], ['b2'], 'b1 has weight 0 everywhere');
    assert.equal(new Set(servedBy(t.workerPids(), answers, [b1, b2])).size, planes, 'every worker served after the reload');

    const status = await (await fetch(`${t.admin}/api/v1/status`)).json() as { pools: { backends: { name: string; weight: number }[] }[] };
    assert.deepEqual(status.pools[0].backends.map((b) => [b.name, b.weight]), [['b1', 0], ['b2', 1]]);
    await t.stop();
  });

  test('a reload that cannot bind a new listener changes nothing in any worker', async () => {
    const [b1, b2] = await twoBackends();
    const busy = createServer();
    servers.push(busy);
    busy.listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const busyPort = (busy.address() as { port: number }).port;
    const t = await startTandem(weighted(b1, b2, 1, 0), { args });
    procs.push(t);

    const broken = weighted(b1, b2, 0, 1, {
      listeners: [{ name: 'web', address: '127.0.0.1:0' }, { name: 'extra', address: `127.0.0.1:${busyPort}` }],
    });
    const outcome = await t.reload(broken);
    assert.match(outcome, /^reload rejected/);
    assert.match(t.output(), new RegExp(`tandem.yaml: listen EADDRINUSE[^\\n]*:${busyPort}`));

    const answers = await getMany(t.url, 20);
    assert.deepEqual([...new Set(answers.map((a) => a.backend))], ['b1'], 'the old weights still hold');
    assert.equal(new Set(servedBy(t.workerPids(), answers, [b1, b2])).size, planes, 'in every worker');
    const metrics = await (await fetch(`${t.admin}/metrics`)).text();
    assert.match(metrics, /tandem_config_reloads_total\{result="failure"\} 1/);
    const status = await (await fetch(`${t.admin}/api/v1/status`)).json() as { listeners: { name: string }[] };
    assert.deepEqual(status.listeners.map((l) => l.name), ['web']);

    // The same change without the busy port goes through.
    assert.equal(await t.reload(weighted(b1, b2, 0, 1, {
      listeners: [{ name: 'web', address: '127.0.0.1:0' }, { name: 'extra', address: '127.0.0.1:0' }],
    })), 'reloaded');
    const extra = (await (await fetch(`${t.admin}/api/v1/status`)).json() as { listeners: { name: string; address: string }[] })
      .listeners.find((l) => l.name === 'extra')!;
    const viaExtra = await getMany(`http://${extra.address}/`, 10);
    assert.deepEqual([...new Set(viaExtra.map((a) => a.backend))], ['b2']);
    // The first listener kept its port.
    assert.equal((await getMany(t.url, 1))[0].backend, 'b2');
    await t.stop();
  });

  test('a reload that fails in the workers (a TLS file that does not parse) leaves no listener of it bound', async () => {
    const [b1, b2] = await twoBackends();
    const t = await startTandem(weighted(b1, b2, 1, 0), { args });
    procs.push(t);
    writeFileSync(join(t.dir, 'bad.pem'), 'not a certificate\n');
    const extraPort = await freePort();
    const outcome = await t.reload(weighted(b1, b2, 0, 1, {
      listeners: [
        { name: 'web', address: '127.0.0.1:0' },
        { name: 'extra', address: `127.0.0.1:${extraPort}` },
        { name: 'secure', address: '127.0.0.1:0', tls: { cert: 'bad.pem', key: 'bad.pem' } },
      ],
    }));
    assert.match(outcome, /^reload rejected/);
    // Every worker had bound `extra` before failing on `secure`, and let it go again.
    await assert.rejects(getMany(`http://127.0.0.1:${extraPort}/`, 1), /ECONNREFUSED/);
    const answers = await getMany(t.url, 20);
    assert.deepEqual([...new Set(answers.map((a) => a.backend))], ['b1'], 'the old weights still hold');
    assert.equal(new Set(servedBy(t.workerPids(), answers, [b1, b2])).size, planes, 'in every worker');
    await t.stop();
  });

  test('SIGTERM lets requests in flight on every worker finish, then exits 0', async () => {
    const [b1] = await twoBackends();
    b1.delay = 1000;
    const t = await startTandem(singlePool([{ name: 'b1', url: b1.url }], {}, { workers: 2 }), { args });
    procs.push(t);
    const inFlight = Array.from({ length: 10 }, () => request(`${t.url}/`, { reset: true })
      .then(async (r) => ({ status: r.statusCode, body: await r.body.text(), port: Number(r.headers['x-peer-port']) })));
    // SIGTERM once every request is at the backend (it answers after 1 s, so they stay in
    // flight; a busy machine may take a while to get them there). A connection still in
    // the accept queue when tandem stops accepting would be reset.
    const pids = t.workerPids();
    for (const deadline = performance.now() + 20_000; b1.requests < inFlight.length;) {
      assert.ok(performance.now() < deadline, `${b1.requests} of ${inFlight.length} requests reached the backend`);
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const pid of pids) assert.ok(connectionsTo(pid, b1.port) > 0, `worker ${pid} has requests in flight`);
    const code = t.stop('SIGTERM');
    const results = await Promise.all(inFlight);
    for (const r of results) assert.deepEqual([r.status, r.body], [200, 'b1']);
    assert.equal(await code, 0);
    assert.match(t.output(), /SIGTERM: stopping/);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'the worker exited too');
    await assert.rejects(request(`${t.url}/`), 'nothing listens any more');
  });

  test('counts survive a reload, and requests during it are all counted', async () => {
    const [b1, b2] = await twoBackends();
    const t = await startTandem(weighted(b1, b2, 1, 1), { args });
    procs.push(t);
    await getMany(t.url, 15);
    assert.equal(await t.reload(weighted(b1, b2, 2, 1)), 'reloaded');
    await getMany(t.url, 15);
    const text = await (await fetch(`${t.admin}/metrics`)).text();
    assert.equal(requestsTotal(text), 30);
    assert.match(text, /tandem_config_reloads_total\{result="success"\} 1/);
    await t.stop();
  });
});
}

describe('cluster reload', () => {
  test('a reload that changes workers forks or stops workers to match, without dropping a request', async () => {
    const [b1, b2] = await twoBackends();
    const t = await startTandem(weighted(b1, b2, 1, 1));
    procs.push(t);
    assert.equal(t.workerPids().length, 2);
    let from = t.output().length;
    assert.equal(await t.reload(weighted(b1, b2, 1, 1, { workers: 3 })), 'reloaded');
    await t.waitForLog(/"msg":"worker 3 pid \d+ started"/, { from });
    await until(async () => new Set(servedBy(t.workerPids(), await getMany(t.url, 12), [b1, b2])).size === 3, 10_000, 'three workers serving');

    from = t.output().length;
    assert.equal(await t.reload(weighted(b1, b2, 1, 1, { workers: 1 })), 'reloaded');
    await t.waitForLog(/worker \d+ pid \d+ stopping: workers is 1 now[^]*worker \d+ pid \d+ stopping: workers is 1 now/, { from });
    // Connections the kernel had queued on a stopping worker's socket are reset (unless
    // net.ipv4.tcp_migrate_req is on); a client retries those, and nothing else fails.
    for (let i = 0; i < 10; i++) assert.equal((await getRetrying(t.url)).status, 200);
    assert.equal(t.workerPids().length, 1);
    const stopped = [...t.output().slice(from).matchAll(/worker \d+ pid (\d+) stopping/g)].map((m) => Number(m[1]));
    await until(() => stopped.every((pid) => !alive(pid)), 10_000, 'the stopped workers to exit');
    assert.equal(await t.stop(), 0);
  });
});
