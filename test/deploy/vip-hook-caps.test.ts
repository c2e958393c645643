// The sidecar's privileges: the hook runs as root with only NET_ADMIN and NET_RAW, as the
// vip-agent container does (--cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW), and
// moves the VIP and the client's ARP entry. As a non-root user without ambient
// capabilities (a container with USER set and --cap-add) it stops with a message that
// says what to do, before touching anything.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Lab, netnsUnavailable, type ExecResult } from '../helpers/netns.ts';
import { missingCommand, skipUnless } from './needs.ts';
import { ROOT } from './pack.ts';

const HOOK = join(ROOT, 'scripts/vip-hook.sh');
// Addresses of their own: other test files may use the lab at the same time.
const VIP = '10.213.13.100';
const FAKE_MAC = '02:00:00:00:13:99';
const ONLY_NET_CAPS = ['setpriv', '--bounding-set=-all,+net_admin,+net_raw', '--inh-caps=-all,+net_admin,+net_raw', '--'];
const NON_ROOT = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups', '--inh-caps=-all', '--'];

const skip = skipUnless(netnsUnavailable() ?? await missingCommand({ cmd: 'setpriv', pkg: 'util-linux' }, { cmd: 'arping', pkg: 'iputils-arping' }), 'vip-hook capabilities');

describe('vip-hook.sh with the sidecar\'s privileges', { skip }, () => {
  let lab: Lab;
  let agent = '';
  let client = '';
  let runDir = '';

  before(async () => {
    lab = await Lab.create();
    agent = await lab.host('agent', '10.213.13.11/24');
    client = await lab.host('client', '10.213.13.2/24');
    runDir = await mkdtemp(join(tmpdir(), 'tandem-caps-'));
  });
  after(async () => {
    await lab?.destroy();
    if (runDir !== '') await rm(runDir, { recursive: true, force: true });
  });

  const env = (state: string) => [
    'env', 'TANDEM_NODE=lb1', 'TANDEM_VIP=vip-a', 'TANDEM_EPOCH=1', `TANDEM_RUN_DIR=${runDir}`,
    'TANDEM_GARP_COUNT=2', 'TANDEM_GARP_INTERVAL=100', 'TANDEM_GARP_REFRESH=0',
    'bash', HOOK, state, 'vip-a', `${VIP}/24`, 'eth0',
  ];
  const held = async () => (await lab.must(agent, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).includes(` ${VIP}/24 `);
  const clientEntry = async () => /lladdr ([0-9a-f:]+)/.exec(await lab.must(client, ['ip', 'neigh', 'show', VIP, 'dev', 'eth0']))?.[1] ?? null;

  test('as root with only NET_ADMIN and NET_RAW: exactly those two capabilities, the VIP goes up, is announced, and comes down', async () => {
    const caps = await lab.must(agent, [...ONLY_NET_CAPS, 'sh', '-c', 'grep CapEff /proc/self/status']);
    // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13, and nothing else.
    assert.equal(caps.trim(), 'CapEff:\t0000000000003000');

    await lab.must(client, ['ip', 'neigh', 'replace', VIP, 'lladdr', FAKE_MAC, 'dev', 'eth0', 'nud', 'stale']);
    const up: ExecResult = await lab.exec(agent, [...ONLY_NET_CAPS, ...env('MASTER')]);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(up.stderr, '', 'no warning with both capabilities');
    assert.ok(await held(), 'the VIP is on eth0');
    const agentMac = await lab.mac(agent);
    const deadline = Date.now() + 5000;
    while ((await clientEntry()) !== agentMac) {
      if (Date.now() > deadline) assert.fail(`the client still has ${await clientEntry()} for ${VIP}: no gratuitous ARP arrived`);
      await new Promise((r) => setTimeout(r, 20));
    }

    const down = await lab.exec(agent, [...ONLY_NET_CAPS, ...env('BACKUP')]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(await held(), false, 'the VIP is gone');
  });

  test('as root without NET_RAW: the VIP moves and the hook says no gratuitous ARP is sent', async () => {
    const r = await lab.exec(agent, ['setpriv', '--bounding-set=-all,+net_admin', '--inh-caps=-all,+net_admin', '--', ...env('MASTER')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /no CAP_NET_RAW for arping: addresses move but no gratuitous ARP is sent \(add NET_RAW\)/);
    assert.ok(await held());
    assert.equal((await lab.exec(agent, [...ONLY_NET_CAPS, ...env('STOP')])).code, 0);
    assert.equal(await held(), false);
  });

  test('as a non-root user without ambient capabilities: a clear message, exit 1, nothing changed', async () => {
    for (const state of ['MASTER', 'BACKUP']) {
      const r = await lab.exec(agent, [...NON_ROOT, ...env(state)]);
      assert.equal(r.code, 1, `${state}: ${r.stderr}`);
      assert.match(r.stderr, /vip-hook: no CAP_NET_ADMIN for ip \(uid 1000\): run the hook as root with NET_ADMIN and NET_RAW/);
      assert.match(r.stderr, /AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW/);
      assert.doesNotMatch(r.stderr, /RTNETLINK/, 'the hook stops before ip fails');
    }
    assert.equal(await held(), false);
  });

  test('as a non-root user with ambient NET_ADMIN and NET_RAW (the systemd unit): the VIP goes up and down', async () => {
    const ambient = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups', '--inh-caps=-all,+net_admin,+net_raw', '--ambient-caps=-all,+net_admin,+net_raw', '--'];
    const up = await lab.exec(agent, [...ambient, ...env('MASTER')]);
    assert.equal(up.code, 0, up.stderr);
    assert.ok(await held());
    const down = await lab.exec(agent, [...ambient, ...env('BACKUP')]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(await held(), false);
  });
});
