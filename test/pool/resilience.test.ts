import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function three(): Promise<TestBackend[]> {
  const list = await Promise.all(['b1', 'b2', 'b3'].map((name) => startBackend({ name })));
  backends.push(...list);
  return list;
}

async function adminStatus(t: TandemProcess): Promise<{ pools: { name: string; backends: { name: string; state: string }[] }[] }> {
  return await (await fetch(`${t.admin}/api/v1/status`)).json() as never;
}

describe('resilience through a real tandem process', () => {
  test('killing one of three backends under continuous load fails no client request, and it is marked down in time', async () => {
    const [b1, b2, b3] = await three();
    const hc = { path: '/healthz', interval: '200ms', timeout: '100ms', rise: 2, fall: 3 };
    const t = await startTandem(singlePool(
      [{ name: 'b1', url: b1.url }, { name: 'b2', url: b2.url }, { name: 'b3', url: b3.url }],
      { healthCheck: hc, retries: 2 },
    ));
    procs.push(t);
    const load = autocannon({ url: `${t.url}/`, connections: 10, duration: 4 });
    await new Promise((r) => setTimeout(r, 1500));
    const killedAt = Date.now();
    await b2.stop();
    let downAfter = -1;
    while (Date.now() - killedAt < 3000) {
      const s = await adminStatus(t);
      if (s.pools[0].backends.find((b) => b.name === 'b2')?.state === 'down') { downAfter = Date.now() - killedAt; break; }
      await new Promise((r) => setTimeout(r, 20));
    }
    const result = await load;
    // tandem's own answers by code, to tell which failure it was.
    const codes = result.non2xx === 0 ? '' : (await (await fetch(`${t.admin}/metrics`)).text()).split('\n').filter((l) => l.startsWith('tandem_proxy_errors_total')).join('; ');
    assert.ok(result.requests.total > 500, `load ran (${result.requests.total})`);
    assert.equal(result.errors, 0, 'socket errors');
    assert.equal(result.non2xx, 0, `non-2xx responses: ${JSON.stringify(result.statusCodeStats)} ${codes}`);
    // interval × fall + one timeout, plus a little for the status poll.
    assert.ok(downAfter >= 0 && downAfter <= 200 * 3 + 100 + 300, `marked down after ${downAfter} ms`);
  });

  test('GET is retried once on another backend when the first resets; POST is never retried after its body was sent', async () => {
    const [b1, b2] = await Promise.all([startBackend({ name: 'r1' }), startBackend({ name: 'r2' })]);
    backends.push(b1, b2);
    b1.mode = 'reset';
    const t = await startTandem(singlePool([{ name: 'r1', url: b1.url }, { name: 'r2', url: b2.url }], { retries: 1 }));
    procs.push(t);
    for (let i = 0; i < 6; i++) {
      const r = await request(`${t.url}/g`);
      assert.equal(r.statusCode, 200);
      assert.equal(await r.body.text(), 'r2');
    }
    // Each GET reached r2 exactly once; those that were first sent to r1 were retried, and
    // the balancer did send some there first, so retries really happened.
    assert.equal(b2.requests, 6, 'r2 served every GET once');
    assert.ok(b1.requests > 0 && b1.requests <= 6, `GETs first sent to the resetting r1: ${b1.requests}`);
    const before = { r1: b1.requests, r2: b2.requests };
    let resets = 0;
    for (let i = 0; i < 6; i++) {
      const r = await request(`${t.url}/p`, { method: 'POST', body: 'order=1' });
      const body = await r.body.text();
      if (r.statusCode === 502) {
        resets++;
        assert.match(body, /TANDEM_ERR_BACKEND_RESET/);
      } else assert.equal(body, 'r2');
    }
    // Every POST that reached r1 failed there and was not sent again to r2.
    assert.equal(b1.requests - before.r1, resets);
    assert.equal(b2.requests - before.r2, 6 - resets);
    assert.ok(resets > 0, 'some POSTs went to the resetting backend');
  });

  test('a sticky client stays on its backend, across a second instance too, and moves once when its backend dies', async () => {
    const [b1, b2, b3] = await three();
    const conf = singlePool(
      [{ name: 'b1', url: b1.url }, { name: 'b2', url: b2.url }, { name: 'b3', url: b3.url }],
      { sticky: { cookie: 'SRV', ttl: '1h' }, healthCheck: { path: '/healthz', interval: '100ms', timeout: '80ms', rise: 1, fall: 1 } },
    );
    const [t1, t2] = await Promise.all([startTandem(conf), startTandem(conf)]);
    procs.push(t1, t2);
    const first = await request(`${t1.url}/`);
    const setCookie = String(first.headers['set-cookie']);
    const home = await first.body.text();
    const cookie = setCookie.split(';')[0];
    assert.match(cookie, /^SRV=[A-Za-z0-9_-]+$/);
    assert.doesNotMatch(cookie, /127\.0\.0\.1|b[123]/);
    for (let i = 0; i < 100; i++) {
      const r = await request(`${i % 2 ? t2.url : t1.url}/`, { headers: { cookie: `theme=dark; ${cookie}` } });
      assert.equal(await r.body.text(), home, `request ${i}`);
    }
    const dead = [b1, b2, b3].find((b) => b.name === home)!;
    await dead.stop();
    await new Promise((r) => setTimeout(r, 400));
    const moved = await request(`${t1.url}/`, { headers: { cookie } });
    const newHome = await moved.body.text();
    assert.notEqual(newHome, home);
    const newCookie = String(moved.headers['set-cookie']).split(';')[0];
    assert.notEqual(newCookie, cookie);
    for (let i = 0; i < 20; i++) {
      const r = await request(`${i % 2 ? t2.url : t1.url}/`, { headers: { cookie: newCookie } });
      assert.equal(await r.body.text(), newHome);
      assert.equal(r.headers['set-cookie'], undefined, 'no new cookie while the backend is up');
    }
  });

  test('a restarted backend gets a small share at first and its full share after slowStart', async () => {
    const [b1, b2] = await Promise.all([startBackend({ name: 's1' }), startBackend({ name: 's2' })]);
    backends.push(b1, b2);
    const t = await startTandem(singlePool(
      [{ name: 's1', url: b1.url, weight: 20 }, { name: 's2', url: b2.url, weight: 20 }],
      // Generous check timeouts and fall 3: on a loaded runner a tight timeout can flap s1
      // into a slow start of its own, which would make the split say nothing about s2.
      // A 6 s ramp: on a busy machine the 100 requests of a share can take a second or more,
      // and against a 2 s ramp they were already spread over half of it (33 of 100).
      { slowStart: '6s', healthCheck: { path: '/healthz', interval: '100ms', timeout: '90ms', rise: 1, fall: 3 } },
    ));
    procs.push(t);
    await b2.stop();
    const downBy = Date.now() + 3000;
    while (Date.now() < downBy && (await adminStatus(t)).pools[0].backends.find((b) => b.name === 's2')?.state !== 'down') {
      await new Promise((r) => setTimeout(r, 20));
    }
    await b2.restart();
    // Wait for the check that brings it back.
    const agent = new Agent({ connections: 4 });
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline) {
      const s = await adminStatus(t);
      if (s.pools[0].backends.find((b) => b.name === 's2')?.state === 'up') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const share = async () => {
      const before = b2.requests;
      for (let i = 0; i < 100; i++) await (await request(`${t.url}/`, { dispatcher: agent })).body.text();
      return b2.requests - before;
    };
    const early = await share();
    await new Promise((r) => setTimeout(r, 6300));
    const late = await share();
    await agent.close();
    assert.ok(early < 30, `right after coming back s2 got ${early} of 100`);
    assert.ok(late >= 45 && late <= 55, `after slowStart s2 got ${late} of 100`);
  });
});
