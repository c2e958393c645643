// The built-in hook (`hook: builtin`: the announcer kept warm, scripts/vip-announcer.pl)
// in network namespaces: a node and a client on a private bridge, as for vip-hook.sh.
// What matters is the client's neighbour table: the first gratuitous ARP (IPv6: NA) must
// move its entry for the VIP to the node's MAC, the repeats too, and after demotion
// nothing may move it back. How fast is a figure of `npm run bench:failover`.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { Lab, netnsUnavailable, run } from '../helpers/netns.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { sleep } from './support.ts';

const FIXTURE = new URL('./fixtures/builtin-hook.ts', import.meta.url).pathname;
// Addresses of their own: other test files may use the lab's other subnets at the same time.
const VIP = '10.213.8.100';
const VIP6 = 'fd00:213:8::100';
const FAKE_MAC = '02:00:00:00:00:98';
const skip = skipUnlessCi(netnsUnavailable() ?? ((await run('sh', ['-c', 'command -v perl'])).code !== 0 ? 'perl is not installed (Debian: perl-base)' : null));

/** The fixture: one VIP's built-in hook in a namespace, driven line by line. */
class HookProcess {
  private readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private readonly waiters: (() => void)[] = [];
  stderr = '';

  constructor(lab: Lab, ns: string, args: string[], wrap: string[] = []) {
    this.child = lab.spawn(ns, [...wrap, process.execPath, FIXTURE, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
    let buf = '';
    this.child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.child.once('exit', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** The next line the fixture prints (within 30 s: starting Node on a busy machine). */
  async next(): Promise<string> {
    const t0 = performance.now();
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null || performance.now() - t0 > 30_000) throw new Error(`no answer from the fixture: ${this.stderr}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 1000);
      });
    }
    return this.lines.shift()!;
  }

  async kill(): Promise<string> {
    this.child.stdin!.write('KILL\n');
    return this.next();
  }

  async run(state: string, epoch = 1): Promise<string> {
    this.child.stdin!.write(`${state} ${epoch}\n`);
    return (await this.next()).split(' ')[2];
  }

  stop(): Promise<void> {
    if (this.child.exitCode !== null) return Promise.resolve();
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin!.end();
    return exited;
  }
}

describe('the built-in hook', { skip }, () => {
  let lab: Lab;
  let node = '';
  let client = '';
  let nodeMac = '';
  const started: HookProcess[] = [];

  before(async () => {
    lab = await Lab.create();
    node = await lab.host('n1', '10.213.8.11/24');
    client = await lab.host('c', '10.213.8.2/24');
    nodeMac = await lab.mac(node);
  });
  after(async () => {
    await Promise.all(started.map((h) => h.stop()));
    await lab?.destroy();
  });

  async function hook(address: string, count = 2, interval = 100, refresh = 0): Promise<HookProcess> {
    const h = new HookProcess(lab, node, [address, 'eth0', String(count), String(interval), String(refresh)]);
    started.push(h);
    assert.equal(await h.next(), 'ready', h.stderr);
    return h;
  }
  const addresses = async (family: '-4' | '-6') => (await lab.must(node, ['ip', '-o', family, 'addr', 'show', 'dev', 'eth0'])).split('\n').map((l) => /inet6? (\S+)/.exec(l)?.[1]).filter((a) => a !== undefined);
  const clientEntry = async (ip: string) => /lladdr ([0-9a-f:]+)/.exec(await lab.must(client, ['ip', 'neigh', 'show', ip, 'dev', 'eth0']))?.[1] ?? null;
  /** Points the client's entry at a MAC nobody has, as a stale cache would. */
  const poison = (ip: string) => lab.must(client, ['ip', 'neigh', 'replace', ip, 'lladdr', FAKE_MAC, 'dev', 'eth0', 'nud', 'stale']);

  async function until(what: string, test: () => Promise<boolean>, ms: number): Promise<void> {
    const t0 = performance.now();
    while (!(await test())) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  test('MASTER adds the address and its gratuitous ARP moves the client to this MAC; refreshes follow while held; BACKUP stops them and removes it', async () => {
    const h = await hook(`${VIP}/24`, 2, 100, 300);
    await poison(VIP);
    assert.equal(await h.run('MASTER'), 'ok', h.stderr);
    assert.deepEqual((await addresses('-4')).filter((a) => a.startsWith(VIP)), [`${VIP}/24`]);
    await until('the client to learn the new MAC', async () => (await clientEntry(VIP)) === nodeMac, 5000);
    // While held, a refresh (every 300 ms) moves a poisoned entry back again.
    await poison(VIP);
    await until('a refresh', async () => (await clientEntry(VIP)) === nodeMac, 5000);
    assert.equal(await h.run('BACKUP'), 'ok', h.stderr);
    assert.deepEqual((await addresses('-4')).filter((a) => a.startsWith(VIP)), []);
    // Three refresh periods: none may come after BACKUP.
    await poison(VIP);
    await sleep(900);
    assert.equal(await clientEntry(VIP), FAKE_MAC, 'an announcement after BACKUP flipped the client back');
    await h.stop();
  });

  test('MASTER and BACKUP are idempotent, and BACKUP removes the address whatever its prefix length', async () => {
    const h = await hook(`${VIP}/24`);
    assert.equal(await h.run('MASTER', 2), 'ok', h.stderr);
    assert.equal(await h.run('MASTER', 2), 'ok', h.stderr);
    assert.deepEqual((await addresses('-4')).filter((a) => a.startsWith(VIP)), [`${VIP}/24`]);
    assert.equal(await h.run('BACKUP', 2), 'ok');
    assert.equal(await h.run('BACKUP', 2), 'ok');
    await lab.must(node, ['ip', 'addr', 'add', `${VIP}/28`, 'dev', 'eth0']);
    assert.equal(await h.run('FAULT', 2), 'ok');
    assert.deepEqual((await addresses('-4')).filter((a) => a.startsWith(VIP)), []);
    assert.ok((await addresses('-4')).includes('10.213.8.11/24'), 'the node address stays');
    await h.stop();
  });

  test('an IPv6 VIP is added without duplicate address detection, announced by an unsolicited NA, and removed again', async () => {
    const h = await hook(`${VIP6}/64`, 1);
    await lab.must(client, ['ip', '-6', 'addr', 'add', 'fd00:213:8::2/64', 'dev', 'eth0', 'nodad']);
    await poison(VIP6);
    assert.equal(await h.run('MASTER'), 'ok', h.stderr);
    const line = await lab.must(node, ['ip', '-o', '-6', 'addr', 'show', 'dev', 'eth0', 'to', VIP6]);
    assert.match(line, /nodad/);
    assert.doesNotMatch(line, /tentative/);
    await until('the client to learn the new MAC from the NA', async () => (await clientEntry(VIP6)) === nodeMac, 5000);
    assert.equal(await h.run('STOP'), 'ok');
    assert.deepEqual((await addresses('-6')).filter((a) => a.startsWith(VIP6)), []);
    await h.stop();
  });

  test('an announcer that died is started again by the next run', async () => {
    const h = await hook(`${VIP}/24`, 1);
    assert.equal(await h.kill(), 'killed');
    await poison(VIP);
    assert.equal(await h.run('MASTER', 3), 'ok', h.stderr);
    await until('the client to learn the new MAC', async () => (await clientEntry(VIP)) === nodeMac, 5000);
    assert.match(h.stderr, /vip announcer killed \(killed by the test\)/);
    assert.equal((h.stderr.match(/vip announcer ready/g) ?? []).length, 2, 'a second announcer started');
    assert.equal(await h.run('BACKUP', 3), 'ok');
    await h.stop();
  });

  test('an interface that does not exist fails MASTER with the reason, and leaves the hook usable', async () => {
    const h = new HookProcess(lab, node, [`${VIP}/24`, 'nosuch0', '1', '100', '0']);
    started.push(h);
    assert.equal(await h.next(), 'ready', h.stderr);
    assert.equal(await h.run('MASTER'), 'failed');
    assert.match(h.stderr, /no interface nosuch0/);
    assert.equal(await h.run('BACKUP'), 'ok', 'removing from a missing interface is nothing to do');
    await h.stop();
  });

  test('without CAP_NET_ADMIN the announcer refuses to start, saying why', async () => {
    const setpriv = await run('sh', ['-c', 'command -v setpriv']);
    if (setpriv.code !== 0) return assert.fail('setpriv is not installed (Debian: util-linux)');
    const h = new HookProcess(lab, node, [`${VIP}/24`, 'eth0', '1', '100', '0'], ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin']);
    started.push(h);
    assert.match(await h.next(), /^refused: .*no CAP_NET_ADMIN/);
    await h.stop();
  });
});
