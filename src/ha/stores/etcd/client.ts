// The etcd v3 storage primitives tandem needs, through etcd's JSON gateway (3.4 and
// newer) over undici: KV range/put/delete, a transaction that writes only when the key
// is absent or unchanged since a revision, and lease grant/keep-alive/revoke. Watches
// are in watch.ts. No election policy here: that is the lease store's.
//
// Several endpoints: requests go to the current one; a connection error, a timeout or
// an "unavailable" answer is logged with the endpoint and the request moves on to the
// next endpoint, until every endpoint was tried once or the request's deadline passed.
// The gateway speaks base64 for keys and values and strings for 64-bit integers; lease
// ids stay strings here (they do not fit a double), revisions become numbers.

import { Agent, request, type Dispatcher } from 'undici';
import { TandemError, errors } from '../../../errors.ts';
import type { Logger } from '../../../log.ts';

export interface EtcdTls {
  /** PEM contents, not paths. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTls | null;
  readonly auth?: { readonly user: string; readonly password: string } | null;
  /** Default deadline of one request over all endpoints it tries (ms). */
  readonly timeout: number;
  readonly log?: Logger;
}

export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  /** Lease id, "0" for none. */
  readonly lease: string;
}

/** Counters the admin API and tests read. */
export interface EtcdClientStats {
  requests: number;
  /** Failed attempts (connection errors, timeouts, unavailable), each logged with its endpoint. */
  endpointErrors: number;
  /** Moves from one endpoint to the next after a failed attempt. */
  failovers: number;
}

/** An error etcd answered with (not a transport failure). */
export class EtcdError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

const GRPC_UNAVAILABLE = 14;
const GRPC_UNAUTHENTICATED = 16;
export const GRPC_NOT_FOUND = 5;

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined): string => (s === undefined ? '' : Buffer.from(s, 'base64').toString('utf8'));

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'utf8');
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]++;
      return end.toString('base64');
    }
  }
  return b64('\0');
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

export function toKeyValue(raw: RawKv): KeyValue {
  return {
    key: unb64(raw.key),
    value: unb64(raw.value),
    createRevision: Number(raw.create_revision ?? 0),
    modRevision: Number(raw.mod_revision ?? 0),
    lease: raw.lease ?? '0',
  };
}

/** The outcome of a conditional write: whether it was made, and the key as it is now. */
export interface WriteResult {
  readonly written: boolean;
  /** Revision of the store after the transaction (the write's revision when written). */
  readonly revision: number;
  /** The key after a failed compare (null: absent); null when written. */
  readonly current: KeyValue | null;
}

/** A JSON-gateway client for one etcd cluster. */
export class EtcdClient {
  readonly endpoints: readonly string[];
  readonly stats: EtcdClientStats;
  private readonly opts: EtcdClientOptions;
  readonly dispatcher: Dispatcher;
  /** Index of the endpoint requests go to first. */
  private current: number;
  private token: string | null;
  private authenticating: Promise<string> | null;
  /** Called with the new endpoint whenever requests move to another one. */
  readonly failoverListeners: Set<(endpoint: string) => void>;

  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new TandemError(errors.LEASE_STORE, 'etcd: no endpoints given');
    this.opts = opts;
    this.endpoints = opts.endpoints.map((e) => e.replace(/\/+$/, ''));
    this.stats = { requests: 0, endpointErrors: 0, failovers: 0 };
    const tls = opts.tls ?? null;
    this.dispatcher = new Agent({
      connect: tls === null ? { timeout: opts.timeout } : { timeout: opts.timeout, ca: tls.ca, cert: tls.cert, key: tls.key },
      keepAliveTimeout: 30_000,
    });
    this.current = 0;
    this.token = null;
    this.authenticating = null;
    this.failoverListeners = new Set();
  }

  /** The endpoint requests (and new watches) go to first. */
  get endpoint(): string {
    return this.endpoints[this.current];
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy();
  }

  /** Checks that some endpoint answers (and authenticates); rejects naming every endpoint and why not. */
  async connect(): Promise<void> {
    await this.call('/v3/maintenance/status', {}, { timeout: this.opts.timeout, what: 'status' });
  }

  async range(key: string, opts: { prefix?: boolean } = {}): Promise<{ kvs: KeyValue[]; revision: number }> {
    const body: Record<string, string> = { key: b64(key) };
    if (opts.prefix === true) body.range_end = prefixEnd(key);
    const res = await this.call('/v3/kv/range', body);
    return { kvs: ((res.kvs ?? []) as RawKv[]).map(toKeyValue), revision: revisionOf(res) };
  }

  async put(key: string, value: string, lease = '0'): Promise<number> {
    return revisionOf(await this.call('/v3/kv/put', { key: b64(key), value: b64(value), lease }));
  }

  async delete(key: string): Promise<number> {
    return revisionOf(await this.call('/v3/kv/deleterange', { key: b64(key) }));
  }

  /**
   * Writes `value` under `lease` only if the key's mod revision is `modRevision`
   * (0: only if the key is absent). Safe to retry: a write that landed before a lost
   * answer shows up as a failed compare whose `current` is the value we wrote.
   */
  async putIf(key: string, value: string, lease: string, modRevision: number): Promise<WriteResult> {
    const k = b64(key);
    const compare = modRevision === 0
      ? { key: k, target: 'CREATE', result: 'EQUAL', create_revision: '0' }
      : { key: k, target: 'MOD', result: 'EQUAL', mod_revision: String(modRevision) };
    const res = await this.call('/v3/kv/txn', {
      compare: [compare],
      success: [{ request_put: { key: k, value: b64(value), lease } }],
      failure: [{ request_range: { key: k } }],
    });
    return txnResult(res);
  }

  /** Grants a lease of `ttl` seconds; etcd may grant a longer one (its minimum TTL). */
  async grant(ttl: number): Promise<{ id: string; ttl: number }> {
    const res = await this.call('/v3/lease/grant', { TTL: String(ttl) });
    return { id: String(res.ID), ttl: Number(res.TTL ?? 0) };
  }

  /** One keep-alive: the lease's TTL in seconds as renewed, 0 when the lease no longer exists. */
  async keepAlive(id: string, timeout?: number): Promise<number> {
    const res = await this.call('/v3/lease/keepalive', { ID: id }, { timeout });
    const result = (res.result ?? {}) as { TTL?: string };
    return Number(result.TTL ?? 0);
  }

  /** Revokes a lease and deletes its keys; a lease that is already gone counts as revoked. */
  async revoke(id: string, timeout?: number): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: id }, { timeout });
    } catch (err) {
      if (!(err instanceof EtcdError && err.code === GRPC_NOT_FOUND)) throw err;
    }
  }

  /** Headers for a request on the current token (authenticating first when auth is set). */
  async headers(): Promise<Record<string, string>> {
    const h: Record<string, string> = { 'content-type': 'application/json' };
    if (this.opts.auth != null) h.authorization = this.token ?? (await this.authenticate());
    return h;
  }

  /** Moves requests to the next endpoint after `endpoint` failed (unless another call already did). */
  failedOver(endpoint: string, why: string): void {
    this.stats.endpointErrors++;
    this.opts.log?.warn({ endpoint, reason: why }, `etcd ${endpoint}: ${why}`);
    if (this.endpoints[this.current] === endpoint && this.endpoints.length > 1) {
      this.current = (this.current + 1) % this.endpoints.length;
      this.stats.failovers++;
      for (const l of this.failoverListeners) l(this.endpoint);
    }
  }

  /**
   * POSTs `body` to `path`, trying each endpoint once from the current one, all within
   * the deadline. Transport failures and "unavailable" move on; other errors etcd gives
   * are thrown as EtcdError; an expired auth token is renewed once.
   */
  async call(path: string, body: unknown, o: { timeout?: number; what?: string } = {}): Promise<Record<string, unknown>> {
    const deadline = performance.now() + (o.timeout ?? this.opts.timeout);
    const failures: string[] = [];
    let reauthed = false;
    this.stats.requests++;
    for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
      const endpoint = this.endpoint;
      const left = Math.round(deadline - performance.now());
      if (left <= 0) {
        failures.push(`${endpoint}: no time left`);
        break;
      }
      let status: number;
      let json: Record<string, unknown>;
      try {
        const res = await request(`${endpoint}${path}`, {
          method: 'POST',
          body: JSON.stringify(body),
          headers: await this.headers(),
          dispatcher: this.dispatcher,
          headersTimeout: left,
          bodyTimeout: left,
          signal: AbortSignal.timeout(left),
        });
        status = res.statusCode;
        json = (await res.body.json()) as Record<string, unknown>;
      } catch (err) {
        const why = describe(err);
        failures.push(`${endpoint}: ${why}`);
        this.failedOver(endpoint, `${o.what ?? path} failed: ${why}`);
        continue;
      }
      if (status === 200 && json.error === undefined) return json;
      const code = Number(json.code ?? 0);
      const message = String(json.message ?? json.error ?? `HTTP ${status}`);
      if (code === GRPC_UNAUTHENTICATED && this.opts.auth != null && !reauthed) {
        reauthed = true;
        this.token = null;
        attempt--;
        continue;
      }
      if (code === GRPC_UNAVAILABLE || status === 503 || /no leader|leader changed|timed out/.test(message)) {
        failures.push(`${endpoint}: ${message}`);
        this.failedOver(endpoint, `${o.what ?? path} failed: ${message}`);
        continue;
      }
      throw new EtcdError(code, `etcd ${endpoint}: ${message}`);
    }
    throw new TandemError(errors.LEASE_STORE, `etcd: no endpoint answered ${o.what ?? path} (${failures.join('; ')})`);
  }

  private authenticate(): Promise<string> {
    this.authenticating ??= (async () => {
      const auth = this.opts.auth!;
      const failures: string[] = [];
      for (let attempt = 0; attempt < this.endpoints.length; attempt++) {
        const endpoint = this.endpoint;
        try {
          const res = await request(`${endpoint}/v3/auth/authenticate`, {
            method: 'POST',
            body: JSON.stringify({ name: auth.user, password: auth.password }),
            headers: { 'content-type': 'application/json' },
            dispatcher: this.dispatcher,
            signal: AbortSignal.timeout(this.opts.timeout),
          });
          const json = (await res.body.json()) as Record<string, unknown>;
          if (typeof json.token === 'string') {
            this.token = json.token;
            return json.token;
          }
          throw new TandemError(errors.LEASE_STORE, `etcd ${endpoint}: authentication as ${auth.user} refused: ${String(json.message ?? json.error ?? res.statusCode)}`);
        } catch (err) {
          if (err instanceof TandemError) throw err;
          failures.push(`${endpoint}: ${describe(err)}`);
          this.failedOver(endpoint, `authenticate failed: ${describe(err)}`);
        }
      }
      throw new TandemError(errors.LEASE_STORE, `etcd: no endpoint answered authenticate (${failures.join('; ')})`);
    })().finally(() => {
      this.authenticating = null;
    });
    return this.authenticating;
  }
}

function revisionOf(res: Record<string, unknown>): number {
  const header = (res.header ?? {}) as { revision?: string };
  return Number(header.revision ?? 0);
}

function txnResult(res: Record<string, unknown>): WriteResult {
  const revision = revisionOf(res);
  if (res.succeeded === true) return { written: true, revision, current: null };
  const responses = (res.responses ?? []) as { response_range?: { kvs?: RawKv[] } }[];
  const kvs = responses[0]?.response_range?.kvs ?? [];
  return { written: false, revision, current: kvs.length === 0 ? null : toKeyValue(kvs[0]) };
}

/** A transport error in a few words: the code and message of the innermost cause. */
export function describe(err: unknown): string {
  let e = err as { message?: string; code?: string; cause?: unknown; name?: string };
  while (e.cause !== undefined && e.cause !== null && typeof e.cause === 'object') e = e.cause as typeof e;
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return 'timed out';
  return e.code !== undefined ? `${e.code} ${e.message ?? ''}`.trim() : String(e.message ?? err);
}
