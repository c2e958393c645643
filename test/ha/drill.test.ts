// `tandem drill` against a real pair in network namespaces: two `tandem run` nodes with
// real VIPs (scripts/vip-hook.sh), the drill itself run as a real process in the client's
// namespace, reaching both admin APIs over the bridge and probing the VIPs from there.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { netnsUnavailable, run } from '../helpers/netns.ts';
import { CLI, NODE } from '../helpers/tandem.ts';
import { HaLab, NODE_ADDR, VIP_ADDR } from './lab.ts';

const TOKEN = 'drill-test-token-0123456789';
const missing = async (tool: string) => (await run('sh', ['-c', `command -v ${tool}`])).code !== 0;
const unavailable = netnsUnavailable() ?? ((await missing('arping')) ? 'arping is not installed (apt-get install iputils-arping)' : null);
// In CI these tests must run: a machine that cannot run them fails with the reason.
const skip = process.env.CI === 'true' ? false : unavailable ?? false;

interface Run {
  readonly code: number | null;
  readonly out: string;
}

describe('tandem drill in network namespaces', { skip, concurrency: false }, () => {
  let h: HaLab;
  before(async () => {
    if (unavailable !== null) assert.fail(`the drill tests cannot run here: ${unavailable}`);
    h = await HaLab.create({ vips: ['vip-a', 'vip-b'], lease: 1000, renewEvery: 200, preemptDelay: 1000 });
    // The drill reaches each node's admin API from the client, as an operator's host would.
    const config = parse(h.config()) as Record<string, unknown>;
    config.admin = { address: '0.0.0.0:9901', token: TOKEN };
    // One worker per node: the drill needs no more, and the nodes start in time on a busy machine.
    config.workers = 1;
    writeFileSync(h.configFile, stringify(config));
    await h.start('lb1');
    await h.start('lb2');
    await h.settle('vip-a', 'lb1');
    await h.settle('vip-b', 'lb2');
  });
  after(async () => {
    await h?.destroy();
  });

  /** Runs `tandem ARGS` in the client's namespace; resolves with its exit code and output. */
  const inClient = (args: string[], env: Record<string, string> = {}): Promise<Run> => {
    const child = h.lab.spawn(h.ns.client, [NODE, CLI, ...args], { env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    return new Promise((resolve) => child.once('close', (code) => {
      process.stdout.write(out.replace(/^/gm, '# '));
      resolve({ code, out });
    }));
  };
  const drill = (args: string[], env: Record<string, string> = {}) => inClient(['drill', ...args], env);

  test('-c FILE: every VIP moves both ways, failback by preemption, no failed probe', async () => {
    const r = await drill(['-c', h.configFile]);
    assert.equal(r.code, 0, r.out + h.logs());
    for (const [vip, holder, peer] of [['vip-a', 'lb1', 'lb2'], ['vip-b', 'lb2', 'lb1']]) {
      assert.match(r.out, new RegExp(`${vip}: held by ${holder}, ${peer} ready; probing tcp://${VIP_ADDR[vip].replaceAll('.', '\\.')}:8080`));
    }
    assert.match(r.out, /handover lb1 -> lb2 in \d+ ms, serving from \d+ ms \(release on lb1\); 0 of \d+ probes failed, \d+ slower than 100 ms/);
    assert.match(r.out, /failback lb2 -> lb1 in \d+ ms, serving from \d+ ms \(preemption by lb1 after 1000 ms\); 0 of \d+ probes failed, \d+ slower than 100 ms/);
    assert.match(r.out, /handover lb2 -> lb1 in \d+ ms, serving from \d+ ms \(release on lb2\); 0 of \d+ probes failed, \d+ slower than 100 ms/);
    assert.match(r.out, /failback lb1 -> lb2 in \d+ ms, serving from \d+ ms \(preemption by lb2 after 1000 ms\); 0 of \d+ probes failed, \d+ slower than 100 ms/);
    assert.match(r.out, /drill ok: 2 VIP\(s\) moved both ways/);
    // The probes were real: the VIPs answered during the drill and do now, on their preferred nodes.
    assert.deepEqual(await h.holders('vip-a'), ['lb1']);
    assert.deepEqual(await h.holders('vip-b'), ['lb2']);
    assert.equal(await h.clientMac('vip-a'), h.macs.lb1);
  });

  test('--admin URLs and --url: failback by a release on the peer, probing over HTTP', async () => {
    const admin = ['--admin', `http://${NODE_ADDR.lb1}:9901`, '--admin', `http://${NODE_ADDR.lb2}:9901/`];
    const r = await drill([...admin, '--vip', 'vip-a', '--url', `http://${VIP_ADDR['vip-a']}:8080/`], { TANDEM_ADMIN_TOKEN: TOKEN });
    assert.match(r.out, /probing http:\/\/10\.213\.0\.100:8080\//);
    const handover = /handover lb1 -> lb2 in \d+ ms, serving from \d+ ms \(release on lb1\); (\d+) of \d+ probes failed/.exec(r.out);
    const failback = /failback lb2 -> lb1 in \d+ ms, serving from \d+ ms \(release on lb2\); (\d+) of \d+ probes failed/.exec(r.out);
    assert.ok(handover !== null && failback !== null, r.out + h.logs());
    assert.doesNotMatch(r.out, /vip-b/);
    // An HTTP probe also fails when its connection, made before the client's ARP entry
    // flipped, is reset after it: a cost a TCP connect probe cannot see. The drill must
    // count it, and its exit code must follow what it counted.
    const failed = Number(handover[1]) + Number(failback[1]);
    assert.equal(r.code, failed === 0 ? 0 : 2, r.out);
    await h.settle('vip-a', 'lb1');
  });

  test('a wrong token: the release is refused, the drill fails and says why', async () => {
    const admin = ['--admin', `http://${NODE_ADDR.lb1}:9901`, '--admin', `http://${NODE_ADDR.lb2}:9901`];
    const r = await drill([...admin, '--vip', 'vip-a', '--token', 'wrong-token-0123456789']);
    assert.equal(r.code, 2, r.out);
    assert.match(r.out, /answered 401/);
    assert.deepEqual(await h.holders('vip-a'), ['lb1']);
  });

  test('tandem release VIP on the holder hands the VIP over; tandem status on the peer shows its VIPs', async () => {
    await h.settle('vip-a', 'lb1');
    const releases = () => h.nodes.get('lb1')!.output().match(/vip-a released/g)?.length ?? 0;
    const before = releases();
    const r = await inClient(['release', 'vip-a', '--admin', `http://${NODE_ADDR.lb1}:9901`], { TANDEM_ADMIN_TOKEN: TOKEN });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^vip-a: released \(the peer takes it over\)$/m);
    assert.equal(releases(), before + 1, 'lb1 released it');
    const status = await inClient(['status', '--admin', `http://${NODE_ADDR.lb2}:9901`], { TANDEM_ADMIN_TOKEN: TOKEN });
    assert.equal(status.code, 0, status.out);
    assert.match(status.out, /^VIP +ADDRESS +THIS NODE +HOLDER +EPOCH +LEASE LEFT$/m);
    assert.match(status.out, /^vip-a +10\.213\.0\.100\/\d+ +(MASTER|BACKUP) /m);
    // Preemption brings it back to lb1.
    await h.settle('vip-a', 'lb1');
  });

  test('a peer that is down: the drill names it, moves nothing and exits 2', async () => {
    await h.signal('lb2', 'SIGTERM');
    await h.settle('vip-a', 'lb1');
    await h.settle('vip-b', 'lb1');
    const releases = () => h.nodes.get('lb1')!.output().match(/vip-a released/g)?.length ?? 0;
    const before = releases();
    const r = await drill(['-c', h.configFile, '--vip', 'vip-a']);
    assert.equal(r.code, 2, r.out);
    assert.match(r.out, /vip-a: not ready, left where it is/);
    assert.match(r.out, /not ready: http:\/\/10\.213\.0\.12:9901 cannot be read: .*ECONNREFUSED/);
    assert.match(r.out, /drill FAILED: vip-a/);
    assert.equal(releases(), before, 'the drill released vip-a with no peer to take it');
  });

  test('bad arguments exit 1', async () => {
    assert.equal((await drill([])).code, 1);
    assert.equal((await drill(['-c', h.configFile, '--vip', 'vip-z'])).code, 1);
    assert.equal((await drill(['--admin', 'not-a-url', '--admin', 'http://x'])).code, 1);
  });
});
