// The sidecar against an admin server that speaks the event stream contract (a real HTTP
// server on port 0 sending `id:`/`event:`/`data:` frames, the current state of every VIP
// first, pings in between), with the recording hook. What matters: the hook follows the
// events, and the VIP is removed at once when the stream closes and after a lease of
// silence.

import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VipEvent } from '../../src/events.ts';
import { findLease, runVipAgent } from '../../src/ha/vip-agent.ts';
import { sleep } from './support.ts';
import { messageLogger } from '../helpers/log.ts';

const HOOK = new URL('./fixtures/record-hook.sh', import.meta.url).pathname;
const LEASE = 500;

const vipEvent = (state: VipEvent['state'], epoch: number, holder: string | null = state === 'MASTER' ? 'lb1' : 'lb2'): VipEvent => ({
  type: 'vip', vip: 'vip-a', state, node: 'lb1', holder, epoch, address: '10.213.0.100/24', interface: 'eth0', leaseRemaining: 0,
});

/** An admin stand-in: the event stream and a status document with the lease. */
class FakeAdmin {
  readonly server: http.Server;
  readonly clients = new Set<http.ServerResponse>();
  snapshot: VipEvent[] = [vipEvent('BACKUP', 1)];
  pings = true;
  /** What pings say of the leases held (the proxy's `leases`); none when null. */
  leases: Record<string, number> | null = null;
  pingsSent = 0;
  /** Answer this many status requests with 503 (a proxy still starting). */
  statusFails = 0;
  private id = 0;
  private pinger: NodeJS.Timeout;
  connections = 0;
  /** Every request the agent made, as `METHOD URL`. */
  readonly requests: string[] = [];
  /** Hook runs the agent reported (POST /api/v1/vips/:vip/hook), with the VIP. */
  readonly reports: { vip: string; state: string; epoch: number; outcome: string; ms: number }[] = [];

  constructor() {
    this.server = http.createServer((req, res) => {
      this.requests.push(`${req.method} ${req.url}`);
      const hookReport = /^\/api\/v1\/vips\/([^/]+)\/hook$/.exec(req.url ?? '');
      if (req.method === 'POST' && hookReport !== null) {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          this.reports.push({ vip: decodeURIComponent(hookReport[1]), ...(JSON.parse(body) as { state: string; epoch: number; outcome: string; ms: number }) });
          res.end('{}');
        });
        return;
      }
      if (req.url === '/api/v1/status' && this.statusFails > 0) {
        this.statusFails--;
        return void res.writeHead(503).end();
      }
      if (req.url === '/api/v1/status') return void res.end(JSON.stringify({ node: 'lb1', vips: [{ name: 'vip-a', leaseDuration: LEASE }] }));
      if (req.url !== '/api/v1/events') return void res.writeHead(404).end();
      this.connections++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('retry: 1000\n\n');
      for (const e of this.snapshot) res.write(`event: vip\ndata: ${JSON.stringify(e)}\n\n`);
      this.clients.add(res);
      res.on('close', () => this.clients.delete(res));
    });
    this.pinger = setInterval(() => {
      if (!this.pings) return;
      const data = JSON.stringify(this.leases === null ? { time: Date.now() } : { time: Date.now(), leases: this.leases });
      for (const c of this.clients) c.write(`event: ping\ndata: ${data}\n\n`);
      this.pingsSent++;
    }, LEASE / 3);
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  send(e: VipEvent): void {
    this.snapshot = [e];
    for (const c of this.clients) c.write(`id: ${++this.id}\nevent: vip\ndata: ${JSON.stringify(e)}\n\n`);
  }

  /** Ends every stream, as the proxy's death would. */
  drop(): void {
    for (const c of this.clients) c.destroy();
  }

  async close(): Promise<void> {
    clearInterval(this.pinger);
    this.drop();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('vip-agent', () => {
  let dir = '';
  let hookLog = '';
  let admin: FakeAdmin;
  let url = '';
  let stopAgent: AbortController;
  let agent: Promise<number>;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tandem-agent-'));
    hookLog = join(dir, 'hooks.log');
    writeFileSync(hookLog, '');
    process.env.HOOK_LOG = hookLog;
    admin = new FakeAdmin();
    url = await admin.listen();
    stopAgent = new AbortController();
  });
  afterEach(async () => {
    stopAgent.abort();
    await agent;
    await admin.close();
    rmSync(dir, { recursive: true, force: true });
  });
  after(() => {
    delete process.env.HOOK_LOG;
  });

  const runs = () => readFileSync(hookLog, 'utf8').split('\n').filter((l) => l.includes(' end ')).map((l) => {
    const [at, , state, , , epoch] = l.split(' ');
    return { at: Number(BigInt(at) / 1_000_000n), state, epoch: Number(epoch) };
  });
  let logged: string[] = [];
  const start = () => {
    logged = [];
    agent = runVipAgent({ admin: url, hook: HOOK, signal: stopAgent.signal, reconnectEvery: 50, log: messageLogger(logged) });
  };
  async function until(what: string, test: () => boolean, ms = 3000): Promise<number> {
    const t0 = performance.now();
    while (!test()) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(runs())}`);
      await sleep(5);
    }
    return performance.now() - t0;
  }

  test('reconciles at start, then runs the hook for every VIP event, and announces again when the epoch moves', async () => {
    start();
    await until('the reconciling BACKUP', () => runs().some((r) => r.state === 'BACKUP'));
    admin.send(vipEvent('MASTER', 2));
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    admin.send(vipEvent('MASTER', 2));
    admin.send(vipEvent('MASTER', 4));
    await until('MASTER again at epoch 4', () => runs().at(-1)?.epoch === 4);
    admin.send(vipEvent('BACKUP', 5));
    await until('BACKUP', () => runs().at(-1)?.state === 'BACKUP');
    assert.deepEqual(runs().map((r) => `${r.state}@${r.epoch}`), ['BACKUP@1', 'MASTER@2', 'MASTER@4', 'BACKUP@5']);
  });

  test('a new lease reaches the hook from the event stream alone: no request stands between the event and the run', async () => {
    start();
    await until('the reconciling BACKUP reported', () => admin.reports.length >= 1);
    const seen = admin.requests.length;
    admin.send(vipEvent('MASTER', 2));
    await until('the MASTER run reported', () => admin.reports.some((r) => r.state === 'MASTER'));
    // Nothing polled or asked between the event and the run: the only request after the
    // event is the report of the finished run.
    assert.deepEqual(admin.requests.slice(seen), ['POST /api/v1/vips/vip-a/hook']);
    assert.equal(admin.connections, 1);
  });

  test('reports every hook run back to the proxy: state, epoch and outcome', async () => {
    start();
    await until('the reconciling BACKUP reported', () => admin.reports.length >= 1);
    admin.send(vipEvent('MASTER', 2));
    await until('the MASTER run reported', () => admin.reports.some((r) => r.state === 'MASTER'));
    const master = admin.reports.find((r) => r.state === 'MASTER')!;
    assert.deepEqual({ ...master, ms: 0 }, { vip: 'vip-a', state: 'MASTER', epoch: 2, outcome: 'ok', ms: 0 });
    assert.ok(master.ms >= 0);
    assert.ok(runs().some((r) => r.state === 'MASTER' && r.epoch === 2), 'the hook ran before it was reported');
  });

  test('removes the VIP at once when the stream closes, and adds it back when the proxy is back and holds it', async () => {
    admin.snapshot = [vipEvent('MASTER', 3)];
    start();
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    const t0 = Date.now();
    admin.drop();
    await until('FAULT', () => runs().at(-1)?.state === 'FAULT');
    const removedAfter = runs().at(-1)!.at - t0;
    // "At once": because the stream closed, not after a lease of silence (how fast is a
    // figure of the failover benchmark, and a busy machine stretches it).
    const why = logged.find((l) => /: removing vip-a/.test(l)) ?? '';
    assert.match(why, /closed the event stream|cannot be reached/, `removed ${removedAfter} ms after the stream closed: ${logged.join(' | ')}`);
    await until('MASTER again after reconnecting', () => runs().at(-1)?.state === 'MASTER');
    assert.ok(admin.connections >= 2);
  });

  test('removes the VIP when the stream stays silent for a lease', async () => {
    admin.snapshot = [vipEvent('MASTER', 3)];
    start();
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    await sleep(2 * LEASE);
    assert.equal(runs().at(-1)?.state, 'MASTER', 'pings keep it up');
    const t0 = Date.now();
    admin.pings = false;
    await until('FAULT', () => runs().at(-1)?.state === 'FAULT', 3 * LEASE);
    const after = runs().at(-1)!.at - t0;
    assert.ok(after >= LEASE - LEASE / 3 - 50 && after <= LEASE + 300, `removed ${after} ms after the last ping (lease ${LEASE})`);
  });

  test('removes a VIP whose lease runs out by the proxy\'s last ping before the silence is noticed, and adds it back when a ping shows the lease renewed', async () => {
    admin.snapshot = [vipEvent('MASTER', 3)];
    start();
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    await until('the lease learnt', () => logged.some((l) => l.includes(`lease is ${LEASE} ms`) || l.includes(`(lease ${LEASE} ms)`)));
    // The proxy's last word: 250 ms left of vip-a's lease; then it freezes (no more pings).
    admin.leases = { 'vip-a': 250 };
    const sent = admin.pingsSent;
    await until('a ping with the lease', () => admin.pingsSent > sent);
    admin.pings = false;
    await until('the fence', () => logged.some((l) => /lease of vip-a is running out/.test(l)), 3 * LEASE);
    // It resumes before a lease of silence and says the lease was renewed after all.
    admin.leases = { 'vip-a': 450 };
    admin.pings = true;
    await until('MASTER again', () => logged.some((l) => /renewed its lease of vip-a after all/.test(l)) && runs().at(-1)?.state === 'MASTER', 3 * LEASE);
    assert.ok(!logged.some((l) => /silent for/.test(l)), `removed by the lease, not by silence: ${logged.join(' | ')}`);
    assert.equal(admin.connections, 1, 'the stream was never given up');
  });

  test('a lease the proxy could not tell before the stream opened is asked again: silence for that lease, not the 3 s fallback, removes the VIP', async () => {
    admin.snapshot = [vipEvent('MASTER', 3)];
    admin.statusFails = 1;
    start();
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    await until('the lease learnt', () => logged.some((l) => l.includes(`lease is ${LEASE} ms`)));
    const t0 = Date.now();
    admin.pings = false;
    // The 3 s fallback cannot fire before 3 s of silence (pings came every LEASE / 3 until
    // t0): a removal within 2 s is the lease's doing (its silence timer, or the fence on the
    // MASTER event's lease), whatever the machine's speed (a busy one took 1269 ms).
    await until('FAULT', () => runs().at(-1)?.state === 'FAULT', 2000);
    const after = runs().at(-1)!.at - t0;
    assert.ok(!logged.some((l) => l.includes('silent for 3000 ms')), `removed ${after} ms after the last ping, not by the 3 s fallback: ${logged.join(' | ')}`);
  });

  test('a MASTER run still going when the lease ends is stopped, its processes killed, and the removal runs at once', async () => {
    // The hook takes 30 s for MASTER only, and the agent would wait 60 s for it.
    process.env.HOOK_DELAY = '30';
    process.env.HOOK_DELAY_STATE = 'MASTER';
    try {
      logged = [];
      agent = runVipAgent({ admin: url, hook: HOOK, signal: stopAgent.signal, reconnectEvery: 50, hookTimeout: 60_000, log: messageLogger(logged) });
      await until('the reconciling BACKUP', () => runs().some((r) => r.state === 'BACKUP'));
      admin.send(vipEvent('MASTER', 2));
      await until('the MASTER run to start', () => readFileSync(hookLog, 'utf8').includes(' start MASTER '));
      admin.send(vipEvent('BACKUP', 3));
      const took = await until('BACKUP', () => runs().at(-1)?.state === 'BACKUP' && runs().at(-1)?.epoch === 3, 20_000);
      assert.ok(took < 20_000);
      assert.deepEqual(runs().map((r) => `${r.state}@${r.epoch}`), ['BACKUP@1', 'BACKUP@3'], 'the MASTER run never finished');
      assert.ok(logged.some((l) => /stopped: the lease was lost/.test(l)), logged.join('\n'));
      await until('the stopped run reported', () => admin.reports.some((r) => r.state === 'MASTER' && r.epoch === 2 && r.outcome === 'failed'));
    } finally {
      delete process.env.HOOK_DELAY;
      delete process.env.HOOK_DELAY_STATE;
    }
  });

  test('stopping the agent removes the VIP', async () => {
    admin.snapshot = [vipEvent('MASTER', 3)];
    start();
    await until('MASTER', () => runs().at(-1)?.state === 'MASTER');
    stopAgent.abort();
    assert.equal(await agent, 0);
    assert.equal(runs().at(-1)?.state, 'STOP');
  });

  test('finds the lease duration in a status document', () => {
    assert.equal(findLease({ node: 'lb1', vips: [{ name: 'a', leaseDuration: 800 }] }), 800);
    assert.equal(findLease({ ha: { leaseDurationMs: 1200 } }), 1200);
    assert.equal(findLease({ vips: [] }), null);
  });
});
