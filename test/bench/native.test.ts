// HAProxy and nginx as the benchmark starts them: generated configs, foreground child
// processes, keep-alive to the origin, and nothing left running after stop().

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { freePort, missingReason, startHaproxy, startNginx, type NativeOptions } from '../../bench/targets/native.ts';
import type { Service } from '../../bench/targets/process.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';

const REQUESTS = 20;

/** Pids of `pid`'s living children. */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const list = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
    if (list !== '') out.push(...list.split(/\s+/).map(Number));
  }
  return out;
}

/** A zombie still has a /proc entry until its parent reaps it; it is gone all the same. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

for (const [name, start] of [['haproxy', startHaproxy], ['nginx', startNginx]] as const) {
  test(`${name} from the generated config proxies to the origin over kept-alive connections, adds X-Forwarded-For, and stops with its workers`, {
    skip: skipUnlessCi(missingReason(name)), timeout: 20_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), `tandem-native-test-${name}-`));
    let connections = 0;
    const seen: IncomingHttpHeaders[] = [];
    const origin = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      seen.push(req.headers);
      res.end(`origin saw ${req.url}`);
    });
    origin.on('connection', () => connections++);
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    const agent = new Agent({ connections: 1 });
    let service: Service | null = null;
    try {
      const o: NativeOptions = { dir, port: await freePort(), upstream: `127.0.0.1:${(origin.address() as AddressInfo).port}` };
      service = await start(o);
      for (let i = 0; i < REQUESTS; i++) {
        const res = await request(`http://127.0.0.1:${o.port}/n${i}`, { dispatcher: agent });
        assert.equal(res.statusCode, 200);
        assert.equal(await res.body.text(), `origin saw /n${i}`);
      }
      assert.equal(seen.length, REQUESTS);
      assert.equal(seen[0]['x-forwarded-for'], '127.0.0.1');
      // One client connection, requests one after another: one origin connection serves them all.
      assert.ok(connections <= 2, `${connections} origin connections for ${REQUESTS} sequential requests: not kept alive`);

      const pid = service.child.pid!;
      const tree = [pid, ...children(pid)];
      if (name === 'nginx') assert.equal(tree.length, 2, 'nginx: a master and one worker');
      await service.stop();
      service = null;
      assert.deepEqual(tree.filter(alive), [], 'processes left running');
      // Everything it wrote is in the run's directory.
      assert.ok(existsSync(join(dir, name === 'nginx' ? 'nginx.conf' : 'haproxy.cfg')));
    } finally {
      await service?.stop();
      await agent.close();
      origin.closeAllConnections();
      origin.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
