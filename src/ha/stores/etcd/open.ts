// Opens the etcd store of an `ha` config: reads the TLS files, builds the client and
// starts the store, turning "nothing answers" into one startup error that names every
// endpoint and what each said.

import { readFileSync } from 'node:fs';
import type { HaConfig } from '../../../config/types.ts';
import { TandemError, errors } from '../../../errors.ts';
import { EtcdClient } from './client.ts';
import { EtcdStore, type EtcdStoreOptions } from './store.ts';
import type { Logger } from '../../../log.ts';

/** What the etcd store shares with every store: who this node is, the lease timing, the log. */
export type StoreBasics = Omit<EtcdStoreOptions, 'client' | 'prefix'> & { readonly log: Logger };

export async function openEtcdStore(config: HaConfig, basics: StoreBasics): Promise<EtcdStore> {
  const log = basics.log;
  const etcd = config.etcd;
  if (etcd === null) throw new TandemError(errors.LEASE_STORE, 'store: etcd needs ha.etcd { endpoints }');
  const pem = (file: string | null) => {
    if (file === null) return undefined;
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new TandemError(errors.LEASE_STORE, `etcd: cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  const tls = etcd.tls === null ? null : { ca: pem(etcd.tls.ca), cert: pem(etcd.tls.cert), key: pem(etcd.tls.key) };
  const client = new EtcdClient({ endpoints: etcd.endpoints, tls, auth: etcd.auth, timeout: config.leaseDuration, log });
  const store = new EtcdStore({ ...basics, client, prefix: etcd.prefix });
  try {
    await store.start();
  } catch (err) {
    await client.close().catch(() => {});
    const prefix = `${errors.LEASE_STORE.message}: `;
    const message = err instanceof Error ? err.message : String(err);
    const why = message.startsWith(prefix) ? message.slice(prefix.length) : message;
    throw new TandemError(errors.LEASE_STORE, `cannot use etcd at ${etcd.endpoints.join(', ')}: ${why}`, { cause: err });
  }
  log.info({ endpoint: client.endpoint, endpoints: etcd.endpoints, prefix: etcd.prefix }, `ha: etcd store on ${client.endpoint} (endpoints ${etcd.endpoints.join(', ')}, prefix ${etcd.prefix})`);
  return store;
}
