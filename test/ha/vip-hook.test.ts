// scripts/vip-hook.sh in network namespaces: a node and a client on a private bridge.
// The client's neighbour table is what matters: a gratuitous ARP must move the client's
// entry for the VIP to the node's MAC, and after demotion nothing may move it back.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, netnsUnavailable, run } from '../helpers/netns.ts';
import { sleep } from './support.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';

const HOOK = new URL('../../scripts/vip-hook.sh', import.meta.url).pathname;
// Addresses of their own: other test files may run arping at the same time (pids are shared).
const VIP = '10.213.7.100';
const FAKE_MAC = '02:00:00:00:00:99';
const skip = skipUnlessCi(netnsUnavailable() ?? ((await run('sh', ['-c', 'command -v arping'])).code !== 0 ? 'arping is not installed (apt-get install iputils-arping)' : null));

describe('vip-hook.sh', { skip }, () => {
  let lab: Lab;
  let node = '';
  let client = '';
  let nodeMac = '';
  let runDir = '';

  before(async () => {
    lab = await Lab.create();
    node = await lab.host('n1', '10.213.7.11/24');
    client = await lab.host('c', '10.213.7.2/24');
    nodeMac = await lab.mac(node);
    runDir = mkdtempSync(join(tmpdir(), 'tandem-hook-'));
  });
  after(async () => {
    await lab?.destroy();
    if (runDir) rmSync(runDir, { recursive: true, force: true });
  });

  const hook = (state: string, env: Record<string, string> = {}) =>
    new Promise<{ code: number; ms: number; stderr: string }>((resolve) => {
      const t0 = performance.now();
      const child = lab.spawn(node, [HOOK, state, 'vip-a', `${VIP}/24`, 'eth0'], {
        env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_VIP: 'vip-a', TANDEM_EPOCH: '1', TANDEM_RUN_DIR: runDir, TANDEM_GARP_COUNT: '2', TANDEM_GARP_INTERVAL: '100', TANDEM_GARP_REFRESH: '0', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      child.once('exit', (code) => resolve({ code: code ?? -1, ms: performance.now() - t0, stderr }));
    });
  const hasVip = async () => (await lab.must(node, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).includes(` ${VIP}/24 `);
  const clientEntry = async () => {
    const out = await lab.must(client, ['ip', 'neigh', 'show', VIP, 'dev', 'eth0']);
    return /lladdr ([0-9a-f:]+)/.exec(out)?.[1] ?? null;
  };
  /** Points the client's entry for the VIP at a MAC nobody has, as a stale cache would. */
  const poison = () => lab.must(client, ['ip', 'neigh', 'replace', VIP, 'lladdr', FAKE_MAC, 'dev', 'eth0', 'nud', 'stale']);
  /** Live (not zombie) processes whose command line names the VIP: announcers and arpings. */
  const senders = async (): Promise<string[]> => {
    const ps = await run('ps', ['-eo', 'stat=,args=']);
    return ps.stdout.split('\n').filter((l) => l.includes(VIP) && !/^\s*Z/.test(l) && /tandem-announce|arping/.test(l) && !l.includes('ps -eo'));
  };

  async function until(what: string, test: () => Promise<boolean>, ms: number): Promise<number> {
    const t0 = performance.now();
    while (!(await test())) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
    return performance.now() - t0;
  }

  test('MASTER adds the address, returns without waiting for arping, and the gratuitous ARP moves the client to this MAC', async () => {
    await poison();
    const r = await hook('MASTER');
    assert.equal(r.code, 0, r.stderr);
    // arping lingers for a second after its packet; the hook returned while it still does.
    assert.ok((await senders()).some((l) => /arping -U -c 1 /.test(l)), `the hook returned after ${Math.round(r.ms)} ms, not after arping's linger`);
    assert.ok(await hasVip());
    // How fast is for `npm run bench:failover`; here only that the announcement arrives.
    await until('the client to learn the new MAC', async () => (await clientEntry()) === nodeMac, 5000);
  });

  test('MASTER and BACKUP are idempotent', async () => {
    assert.equal((await hook('MASTER')).code, 0);
    assert.equal((await hook('MASTER')).code, 0);
    assert.ok(await hasVip());
    assert.equal((await hook('BACKUP')).code, 0);
    assert.equal((await hook('BACKUP')).code, 0);
    assert.equal((await hook('STOP')).code, 0);
    assert.equal(await hasVip(), false);
  });

  test('while holding, the announcer refreshes the client entry periodically; demotion kills it and nothing flips the client back', async () => {
    const env = { TANDEM_GARP_COUNT: '1', TANDEM_GARP_REFRESH: '300' };
    assert.equal((await hook('MASTER', env)).code, 0);
    await until('first announcement', async () => (await clientEntry()) === nodeMac, 5000);
    await poison();
    await until('a refresh announcement', async () => (await clientEntry()) === nodeMac, 5000);
    assert.ok((await senders()).some((l) => l.includes('tandem-announce')), 'an announcer runs while holding');
    assert.equal((await hook('FAULT', env)).code, 0);
    assert.equal(await hasVip(), false);
    assert.deepEqual(await senders(), [], 'no announcer (nor lingering arping) survives demotion');
    await poison();
    await sleep(700);
    assert.equal(await clientEntry(), FAKE_MAC, 'nothing announced the VIP after demotion');
  });

  test('a MASTER hook killed at any point of its run (as at its timeout) leaves no announcer once the VIP is demoted', async () => {
    // tandem SIGKILLs a hook that overruns its timeout; whatever the hook had started by
    // then, the next BACKUP must find and stop it, or it would keep announcing this MAC.
    const env = { TANDEM_GARP_COUNT: '1', TANDEM_GARP_REFRESH: '200' };
    for (let delay = 0; delay <= 60; delay += 10) {
      const child = lab.spawn(node, [HOOK, 'MASTER', 'vip-a', `${VIP}/24`, 'eth0'], {
        env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_VIP: 'vip-a', TANDEM_EPOCH: '1', TANDEM_RUN_DIR: runDir, TANDEM_GARP_INTERVAL: '100', ...env },
        stdio: 'ignore',
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await sleep(delay);
      child.kill('SIGKILL');
      await exited;
      const down = await hook('BACKUP', env);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(await hasVip(), false);
      // An announcer forked just before the kill may not have recorded itself yet when
      // BACKUP ran; it must then see that it is no longer wanted and exit unheard.
      await sleep(50);
      assert.deepEqual(await senders(), [], `no announcer survives a hook killed after ${delay} ms`);
    }
    await poison();
    await sleep(600);
    assert.equal(await clientEntry(), FAKE_MAC, 'nothing announced the VIP after demotion');
  });

  test('a MASTER hook killed right after it forked the announcer, before anything recorded it, leaves none once demoted', async () => {
    // The narrowest case of the one above, made certain: a setsid first on PATH kills the
    // hook that called it, then starts the announcer as the real one would.
    const realSetsid = (await run('sh', ['-c', 'command -v setsid'])).stdout.trim();
    const bin = mkdtempSync(join(tmpdir(), 'tandem-setsid-'));
    writeFileSync(join(bin, 'setsid'), `#!/bin/sh\nkill -KILL $PPID\nexec ${realSetsid} "$@"\n`, { mode: 0o755 });
    try {
      const env = { TANDEM_GARP_COUNT: '1', TANDEM_GARP_REFRESH: '200' };
      // The hook may have returned already (it waits only for its first packet to leave);
      // either way the announcer starts with nobody having recorded it.
      const killed = await hook('MASTER', { ...env, PATH: `${bin}:${process.env.PATH}` });
      assert.ok(killed.code === -1 || killed.code === 0, `the hook was killed or had returned (${killed.code})`);
      await until('the orphaned announcer to announce', async () => (await senders()).length > 0, 5000);
      const down = await hook('BACKUP', env);
      assert.equal(down.code, 0, down.stderr);
      await sleep(50);
      assert.deepEqual(await senders(), [], 'BACKUP found and stopped the orphaned announcer');
      await poison();
      await sleep(600);
      assert.equal(await clientEntry(), FAKE_MAC, 'nothing announced the VIP after demotion');
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  test('an interface that does not exist fails MASTER (the node goes to FAULT) but not BACKUP', async () => {
    const child = (state: string) =>
      new Promise<number>((resolve) => {
        const c = lab.spawn(node, [HOOK, state, 'vip-x', '10.213.7.101/24', 'nosuch0'], { env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_RUN_DIR: runDir }, stdio: 'ignore' });
        c.once('exit', (code) => resolve(code ?? -1));
      });
    assert.notEqual(await child('MASTER'), 0);
    assert.equal(await child('BACKUP'), 0);
  });

  test('an IPv6 VIP is added without duplicate address detection and removed again', async () => {
    const c = (state: string) =>
      new Promise<{ code: number; stderr: string }>((resolve) => {
        const p = lab.spawn(node, [HOOK, state, 'vip-6', 'fd00:213::100/64', 'eth0'], { env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_RUN_DIR: runDir, TANDEM_GARP_REFRESH: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        p.once('exit', (code) => resolve({ code: code ?? -1, stderr }));
      });
    const up = await c('MASTER');
    assert.equal(up.code, 0, up.stderr);
    const addrs = await lab.must(node, ['ip', '-o', '-6', 'addr', 'show', 'dev', 'eth0']);
    assert.match(addrs, /fd00:213::100\/64/);
    assert.doesNotMatch(addrs, /fd00:213::100\/64.*tentative/);
    assert.equal((await c('BACKUP')).code, 0);
    assert.doesNotMatch(await lab.must(node, ['ip', '-o', '-6', 'addr', 'show', 'dev', 'eth0']), /fd00:213::100/);
  });
  /** Runs the hook for any VIP on eth0 of the node; resolves with its exit code and stderr. */
  const hookFor = (state: string, vip: string, cidr: string) =>
    new Promise<{ code: number; stderr: string }>((resolve) => {
      const p = lab.spawn(node, [HOOK, state, vip, cidr, 'eth0'], { env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_RUN_DIR: runDir, TANDEM_GARP_REFRESH: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      p.once('exit', (code) => resolve({ code: code ?? -1, stderr }));
    });

  test('an IPv6 VIP written in a non-canonical form is found again: a second MASTER succeeds and BACKUP removes it', async () => {
    const written = 'FD00:213:0:0::0200/64';
    const first = await hookFor('MASTER', 'vip-6c', written);
    assert.equal(first.code, 0, first.stderr);
    assert.match(await lab.must(node, ['ip', '-o', '-6', 'addr', 'show', 'dev', 'eth0']), / fd00:213::200\/64 /);
    const again = await hookFor('MASTER', 'vip-6c', written);
    assert.equal(again.code, 0, again.stderr);
    const down = await hookFor('BACKUP', 'vip-6c', written);
    assert.equal(down.code, 0, down.stderr);
    assert.doesNotMatch(await lab.must(node, ['ip', '-o', '-6', 'addr', 'show', 'dev', 'eth0']), /fd00:213::200/);
  });

  test('BACKUP removes the VIP address even when it is up with another prefix length, and leaves the subnet alone', async () => {
    await lab.must(node, ['ip', 'addr', 'add', '10.213.7.102/32', 'dev', 'eth0']);
    const down = await hookFor('BACKUP', 'vip-p', '10.213.7.102/24');
    assert.equal(down.code, 0, down.stderr);
    const addrs = await lab.must(node, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0']);
    assert.doesNotMatch(addrs, /10\.213\.7\.102\//);
    assert.match(addrs, / 10\.213\.7\.11\/24 /, "the node's own address in the same subnet stays");
  });
  test('an interface name that is shell code is refused and never run, even when such an interface exists', async () => {
    // Linux accepts this name; pasted into a shell script it creates the file "p".
    const evil = 'v$(>p)';
    await lab.must(node, ['ip', 'link', 'add', evil, 'type', 'veth', 'peer', 'name', 'vpeer']);
    await lab.must(node, ['ip', 'link', 'set', evil, 'up']);
    const cwd = mkdtempSync(join(tmpdir(), 'tandem-evil-'));
    try {
      for (const state of ['MASTER', 'BACKUP']) {
        const code = await new Promise<number>((resolve) => {
          const c = lab.spawn(node, [HOOK, state, 'vip-e', '10.213.9.100/24', evil], { cwd, env: { ...process.env, TANDEM_NODE: 'lb1', TANDEM_RUN_DIR: runDir }, stdio: 'ignore' });
          c.once('exit', (code) => resolve(code ?? -1));
        });
        assert.equal(code, 2, `${state} refused the name`);
      }
      await sleep(300);
      assert.equal(existsSync(join(cwd, 'p')), false, 'nothing in the name was run');
      assert.doesNotMatch(await lab.must(node, ['ip', '-o', 'addr', 'show']), /10\.213\.9\.100/);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
      await lab.exec(node, ['ip', 'link', 'del', evil]);
    }
  });
});
