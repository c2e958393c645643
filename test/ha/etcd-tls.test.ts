// The etcd store over TLS with client certificates, against a real etcd that requires
// them (certificates made by openssl for the test): `tandem run`'s own path, from the
// config's PEM files to a held VIP, and a clear startup error without a client certificate.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HaConfig } from '../../src/config/types.ts';
import { TandemError } from '../../src/errors.ts';
import { openEtcdStore } from '../../src/ha/stores/etcd/open.ts';
import type { EtcdStore } from '../../src/ha/stores/etcd/store.ts';
import { etcdSkip, makeCerts, startEtcd, type EtcdCluster } from '../helpers/etcd.ts';
import { Competitor, waitLease } from './support.ts';
import { silentLogger } from '../helpers/log.ts';

const skip = etcdSkip();

describe('etcd store over TLS', { skip }, () => {
  let etcd: EtcdCluster | null = null;
  const stores: EtcdStore[] = [];
  const competitors: Competitor[] = [];
  after(async () => {
    for (const c of competitors) c.halt();
    await Promise.all(stores.map((s) => s.close()));
    await etcd?.close();
  });

  test('with the CA and a client certificate from the config, the store holds a VIP; without the client certificate it is a startup error', async () => {
    const certs = makeCerts(mkdtempSync(join(tmpdir(), 'tandem-etcd-tls-')));
    etcd = await startEtcd({ tls: certs });
    assert.ok(etcd.endpoints[0].startsWith('https://'));
    const ha = (tls: HaConfig['etcd'] extends infer E ? (E extends { tls: infer T } ? T : never) : never): HaConfig => ({
      store: 'etcd',
      etcd: { endpoints: etcd!.endpoints, prefix: '/tls', tls, auth: null },
      nodes: [{ id: 'lb1', host: '127.0.0.1', port: 1 }],
      secret: null, multicastGroup: null, agent: false, leaseDuration: 1000, renewEvery: 200, hook: null, hookTimeout: 1000, garpCount: 0, garpInterval: 0, garpRefresh: 0, vips: [],
    });
    const basics = { node: 'lb1', leaseDuration: 1000, renewEvery: 200, handoverTimeout: 2000, log: silentLogger() };
    const err = await openEtcdStore(ha({ ca: certs.ca, cert: null, key: null }), basics).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof TandemError, String(err));
    assert.match(err.message, new RegExp(`cannot use etcd at ${etcd.endpoints[0].replaceAll('.', '\\.')}`));
    const store = await openEtcdStore(ha({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey }), basics);
    stores.push(store);
    competitors.push(new Competitor(store, 'lb1', 'vip', { priority: 100, renewEvery: 200 }));
    const held = await waitLease(store, 'vip', (l) => l.holder === 'lb1' && l.serving, 5000, 'lb1 to hold over TLS');
    assert.ok(held.epoch > 0);
  });
});
