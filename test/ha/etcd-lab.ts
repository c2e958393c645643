// etcd for the namespace test bed: Debian's etcd-server in a host of the lab's own
// (10.213.0.5 on the bridge), so the tandem nodes reach it over the lab's private segment
// and nothing listens outside the namespaces the test created. Data lives in the lab's
// temp dir; HaLab.destroy kills it with everything else in the lab.
//
//   const h = await HaLab.create({ etcd: labEtcdStore(), ... });
//   const etcd = await startLabEtcd(h);    // resolves once etcd serves clients
//   etcd.log();                             // its log so far

import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ETCD } from '../helpers/etcd.ts';
import type { HaLab } from './lab.ts';
import { sleep } from './support.ts';

export const ETCD_ADDR = '10.213.0.5';
export const ETCD_ENDPOINT = `http://${ETCD_ADDR}:2379`;

let prefixes = 0;

/** The `etcd` option of HaLab.create for the lab's etcd: its endpoint and a fresh prefix. */
export function labEtcdStore(): { endpoints: string[]; prefix: string } {
  return { endpoints: [ETCD_ENDPOINT], prefix: `/tandem-netns-${process.pid}-${++prefixes}` };
}

export interface LabEtcd {
  readonly process: ChildProcess;
  log(): string;
}

/**
 * Starts a one-member etcd in the lab (heartbeat 50 ms, election timeout 500 ms, so
 * 1 s leases are granted as asked) and waits until a client on the bridge is answered.
 */
export async function startLabEtcd(h: HaLab, ms = 30_000): Promise<LabEtcd> {
  const ns = await h.lab.host('etcd', `${ETCD_ADDR}/24`);
  h.ns.etcd = ns;
  const logFile = join(h.dir, 'etcd.log');
  const fd = openSync(logFile, 'a');
  // The peer URL stays on the namespace's own loopback: one member, no peers.
  // Data on tmpfs where there is one: on a machine whose disk is shared and busy, an fsync
  // can stall etcd for longer than half a lease, and these tests are about tandem.
  const data = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/tandem-etcd-') : join(h.dir, 'etcd');
  h.cleanups.push(() => rmSync(data, { recursive: true, force: true }));
  const child = h.lab.spawn(ns, [
    ETCD, '--name', 'm1', '--data-dir', data,
    '--listen-client-urls', ETCD_ENDPOINT, '--advertise-client-urls', ETCD_ENDPOINT,
    '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
    '--initial-cluster', 'm1=http://127.0.0.1:2380', '--initial-cluster-state', 'new',
    '--heartbeat-interval', '50', '--election-timeout', '500',
    '--logger', 'zap', '--log-outputs', 'stderr',
  ], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const t0 = performance.now();
  // etcd logs this once its client listener is up (3.4: "serving client traffic insecurely",
  // 3.5: "serving client traffic"): an event, no polling over the network.
  while (!log().includes('serving client traffic')) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited during start:\n${log().slice(-2000)}`);
    if (performance.now() - t0 > ms) throw new Error(`etcd did not start within ${ms} ms:\n${log().slice(-2000)}`);
    await sleep(50);
  }
  // And a client on the bridge gets an answer (the client namespace, as the nodes will).
  for (;;) {
    const r = await h.fetchIn(h.ns.client, `${ETCD_ENDPOINT}/health`);
    if (r.status === 200 && r.body.includes('"health":"true"')) return { process: child, log };
    if (performance.now() - t0 > ms) throw new Error(`etcd does not answer on ${ETCD_ENDPOINT}: ${r.status} ${r.body}\n${log().slice(-2000)}`);
    await sleep(100);
  }
}
