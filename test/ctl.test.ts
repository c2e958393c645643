// The runtime commands against a running tandem process: `tandem status`, drain,
// disable, enable, weight, release and reload, as tables and as --json, with their exit
// codes (0 done, 1 a wrong call, 2 no answer); and `tandem --version`.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { SseClient } from './admin/helpers.ts';
import { runCli } from './helpers/cli.ts';
import { startBackend, type TestBackend } from './helpers/backends.ts';
import { singlePool } from './helpers/config.ts';
import { startTandem, type TandemProcess } from './helpers/tandem.ts';

const TOKEN = 'a-token-for-the-runtime-commands';

let a: TestBackend;
let b: TestBackend;
let t: TandemProcess;
let conf: (weightA: number) => string;

/** `tandem ARGS --admin URL` with the token in TANDEM_ADMIN_TOKEN. */
const ctl = (...args: string[]) => runCli([...args, '--admin', t.admin!], { TANDEM_ADMIN_TOKEN: TOKEN });

before(async () => {
  [a, b] = await Promise.all([startBackend({ name: 'a' }), startBackend({ name: 'b' })]);
  conf = (weightA) => singlePool([{ name: 'a', url: a.url, weight: weightA }, { name: 'b', url: b.url }], { debugHeaders: true },
    { admin: { address: '127.0.0.1:0', token: TOKEN } });
  t = await startTandem(conf(1));
});

after(async () => {
  await t?.stop();
  await Promise.all([a?.close(), b?.close()]);
});

interface BackendJson { name: string; state: string; shown: string; weight: number; runtimeWeight: number | null; effectiveWeight: number; stateSince: number; downtimeMs: number }

async function backendJson(name: string): Promise<BackendJson> {
  const r = await ctl('status', '--json');
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as { pools: { name: string; backends: BackendJson[] }[] };
  return s.pools.find((p) => p.name === 'web')!.backends.find((x) => x.name === name)!;
}

/** Which backend answered each of `n` requests, by name. */
async function spread(n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await request(`${t.url}/`);
    await r.body.text();
    const name = String(r.headers['x-tandem-backend']);
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

describe('tandem --version', () => {
  test('prints the version of package.json and Node\'s, by --version, -V and version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const args of [['--version'], ['-V'], ['version']]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `tandem ${pkg.version} (node ${process.versions.node})\n`);
    }
  });

  test('the top-level help lists every command and option', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['run', 'check', 'demo', 'vip-agent', 'drill', 'bench', 'version', 'status', 'drain', 'disable', 'enable', 'weight', 'release', 'reload']) {
      assert.match(r.stdout, new RegExp(`^  ${c}\\b`, 'm'), c);
      const help = await runCli([c, '--help']);
      assert.equal(help.code, 0, `${c}: ${help.stderr}`);
      assert.match(help.stdout, new RegExp(`^Usage: tandem ${c}`), c);
    }
    for (const o of ['--admin', '--token', '--json', '--version', '--help', '-c FILE']) assert.ok(r.stdout.includes(o), o);
  });
});

describe('runtime commands against a running instance', () => {
  test('status prints tables of listeners and backends, and --json the API\'s document', async () => {
    const r = await ctl('status');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^LISTENER +ADDRESS +BOUND +CONNECTIONS\nweb +127\.0\.0\.1:\d+ +yes +\d+$/m);
    assert.match(r.stdout, /^POOL\/BACKEND +STATE +SINCE +DOWNTIME +WEIGHT +EFFECTIVE +ACTIVE +REQUESTS +ERRORS +RECENT ERR\/REQ$/m);
    assert.match(r.stdout, /^web\/a +UNCHECKED +\d+s +0s +1 /m);
    assert.match(r.stdout, /pool web has no health checks/);
    const j = await ctl('status', '--json');
    assert.equal(j.code, 0);
    const doc = JSON.parse(j.stdout) as { configFile: string; pools: { name: string }[] };
    assert.equal(doc.configFile, t.file, 'the token holder sees the config path');
    assert.deepEqual(doc.pools.map((p) => p.name), ['web']);
  });

  test('drain, disable and enable change the backend, and traffic follows', async () => {
    const drained = await ctl('drain', 'web/a');
    assert.equal(drained.code, 0, drained.stderr);
    assert.equal(drained.stdout, 'web/a: draining (admin draining)\n');
    assert.deepEqual(await spread(6), { b: 6 }, 'no new request to a draining backend');
    assert.match((await ctl('status')).stdout, /^web\/a +DRAINING +\d+s/m);
    const disabled = await ctl('disable', 'web/a', '--json');
    assert.equal(disabled.code, 0);
    assert.deepEqual(JSON.parse(disabled.stdout), { pool: 'web', backend: 'a', admin: 'disabled', state: 'disabled' });
    const enabled = await ctl('enable', 'web/a');
    assert.equal(enabled.code, 0);
    assert.equal(enabled.stdout, 'web/a: up (admin enabled)\n');
    assert.equal((await spread(6)).a, 3, 'back in the rotation');
  });

  test('weight sets a runtime weight the balancer uses, shows it as such, publishes it, and a reload takes it back', async () => {
    const events = await SseClient.connect(`${t.admin}/api/v1/events`, { authorization: `Bearer ${TOKEN}` });
    try {
      const r = await ctl('weight', 'web/a', '3');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'web/a: weight 3 until the next reload (configured 1, effective 3)\n');
      const e = await events.waitFor((x) => x.event === 'backend' && (x.data as { weight?: number }).weight === 3);
      assert.deepEqual(e.data, { type: 'backend', pool: 'web', backend: 'a', state: 'up', reason: 'admin', previous: 'up', weight: 3, actor: '127.0.0.1' });
      const view = await backendJson('a');
      assert.deepEqual([view.weight, view.runtimeWeight, view.effectiveWeight], [1, 3, 3]);
      assert.match((await ctl('status')).stdout, /^web\/a +UNCHECKED +\S+ +\S+ +3 \(runtime; config 1\)/m);
      // The worker balances with it: 3 of every 4 requests.
      assert.deepEqual(await spread(8), { a: 6, b: 2 });

      // A reload goes back to the configured weight, and says so on the bus.
      assert.equal((await ctl('reload')).stdout, 'reloaded\n');
      const back = await events.waitFor((x) => x.event === 'backend' && (x.data as { reason: string }).reason.startsWith('reload'));
      assert.equal((back.data as { weight: number }).weight, 1);
      const after = await backendJson('a');
      assert.deepEqual([after.runtimeWeight, after.effectiveWeight], [null, 1]);
      assert.deepEqual(await spread(4), { a: 2, b: 2 });
    } finally {
      events.close();
    }
  });

  test('weight reset goes back to the configured weight; a bad weight is refused before any call', async () => {
    assert.equal((await ctl('weight', 'web/b', '0')).code, 0);
    assert.deepEqual(await spread(4), { a: 4 }, 'weight 0 takes no new requests');
    const reset = await ctl('weight', 'web/b', 'reset', '--json');
    assert.equal(reset.code, 0);
    assert.equal((JSON.parse(reset.stdout) as { runtimeWeight: number | null }).runtimeWeight, null);
    for (const bad of ['1001', '2.5', 'heavy']) {
      const r = await ctl('weight', 'web/b', bad);
      assert.equal(r.code, 1, bad);
      assert.match(r.stderr, new RegExp(`^tandem weight: the weight must be a whole number from 0 to 1000, or 'reset' \\(got '${bad}'\\)`), bad);
    }
    // The API checks too, for callers other than this command.
    const api = await fetch(`${t.admin}/api/v1/pools/web/backends/b/weight`, {
      method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"weight":1001}',
    });
    assert.equal(api.status, 400);
    assert.match((await api.json() as { message: string }).message, /weight must be a whole number from 0 to 1000, or null/);
  });

  test('an unknown backend or pool, and an unknown VIP, exit 1 with the API\'s error', async () => {
    const backend = await ctl('drain', 'web/zz');
    assert.equal(backend.code, 1);
    assert.equal(backend.stderr, 'tandem drain: TANDEM_ERR_ADMIN_NOT_FOUND: no such pool, backend or VIP: backend zz in pool web\n');
    const pool = await ctl('enable', 'nope/a', '--json');
    assert.equal(pool.code, 1);
    assert.equal((JSON.parse(pool.stdout) as { error: string }).error, 'TANDEM_ERR_ADMIN_NOT_FOUND');
    const vip = await ctl('release', 'vip-x');
    assert.equal(vip.code, 1);
    assert.match(vip.stderr, /^tandem release: TANDEM_ERR_ADMIN_NOT_FOUND: .*VIP vip-x/);
    const shape = await ctl('drain', 'web');
    assert.equal(shape.code, 1);
    assert.match(shape.stderr, /'web' is not POOL\/BACKEND[\s\S]*Usage: tandem drain/);
  });

  test('the API maps fastify\'s unsupported media type to its catalogue code, in the one error shape', async () => {
    const r = await fetch(`${t.admin}/api/v1/reload`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/xml' }, body: '<reload/>' });
    assert.equal(r.status, 415);
    const body = await r.json() as { error: string; code: string; message: string };
    assert.equal(body.error, 'TANDEM_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE');
    assert.equal(body.code, body.error);
    assert.match(body.message, /^the admin API takes request bodies as application\/json only: /);
  });

  test('a wrong or missing token exits 1 and says which; an unreachable admin API exits 2', async () => {
    const wrong = await runCli(['drain', 'web/a', '--admin', t.admin!, '--token', 'not-the-token']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /TANDEM_ERR_ADMIN_UNAUTHORIZED: missing or wrong bearer token \(the token given was refused\)/);
    const missing = await runCli(['reload', '--admin', t.admin!]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /TANDEM_ERR_ADMIN_UNAUTHORIZED.*set TANDEM_ADMIN_TOKEN/);
    assert.equal((await backendJson('a')).state, 'up', 'nothing changed');

    // Port 2 on loopback: refused at once (a port 0 gave and closed again can go to another
    // test's server meanwhile; fetch refuses to try port 1).
    const port = 2;
    const unreachable = await runCli(['status', '--admin', `127.0.0.1:${port}`]);
    assert.equal(unreachable.code, 2);
    assert.match(unreachable.stderr, new RegExp(`TANDEM_ERR_ADMIN_UNREACHABLE: .*http://127\\.0\\.0\\.1:${port} \\(.*ECONNREFUSED\\)`));
  });

  test('reload exits 0 on success and 1 with the located errors when the file is refused; -c FILE finds the admin API and token', async () => {
    const good = conf(1);
    writeFileSync(t.file, good.replace(/address: 127\.0\.0\.1:0\n(\s+)token/, `address: ${t.admin!.replace('http://', '')}\n$1token`));
    const viaFile = await runCli(['status', '-c', t.file]);
    assert.equal(viaFile.code, 0, viaFile.stderr);
    assert.match(viaFile.stdout, /^web\/a /m);
    writeFileSync(t.file, good.replace('weight: 1', 'wieght: 1'));
    const refused = await ctl('reload');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^tandem reload: TANDEM_ERR_RELOAD_FAILED: reload rejected; the running config is kept\n.*tandem\.yaml:\d+:\d+: pools\.web\.backends\[0\]/m);
    writeFileSync(t.file, good);
    const ok = await ctl('reload', '--json');
    assert.equal(ok.code, 0);
    assert.deepEqual(JSON.parse(ok.stdout), { ok: true, errors: [] });
  });
});
