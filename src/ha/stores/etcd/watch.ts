// An etcd watch on a key prefix, as one streaming response of the JSON gateway
// (newline-delimited results). It resumes on the next endpoint from the revision after
// the last event it delivered, so a member that dies costs no event; when that revision
// was compacted away, the owner re-reads the prefix (onReset) and the watch goes on from
// the revision of that read. It follows the client's requests: when they move to another
// endpoint (this member stopped answering, or lost its quorum), so does the stream, for
// a member cut off from the others keeps a stream open that will never carry an event.

import { request } from 'undici';
import { b64, describe, prefixEnd, toKeyValue, type EtcdClient, type KeyValue } from './client.ts';
import type { Logger } from '../../../log.ts';

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  readonly kv: KeyValue;
  /** The key before this event (etcd's prev_kv); null when it did not exist or was compacted. */
  readonly prev: KeyValue | null;
}

export interface PrefixWatchOptions {
  readonly client: EtcdClient;
  readonly prefix: string;
  /** Deliver events after this revision (the revision of the read the owner starts from). */
  readonly after: number;
  /** Called with the events of one revision range, in order. */
  readonly onEvents: (events: WatchEvent[]) => void;
  /** The history needed was compacted: re-read everything and return that read's revision. */
  readonly onReset: () => Promise<number>;
  readonly log?: Logger;
}

const RETRY_FIRST = 25;
const RETRY_MAX = 1000;

interface RawEvent {
  type?: string;
  kv?: Record<string, string>;
  prev_kv?: Record<string, string>;
}

interface RawResult {
  header?: { revision?: string };
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: RawEvent[];
}

/** A watch that runs until close(). */
export class PrefixWatch {
  private readonly opts: PrefixWatchOptions;
  private next: number;
  private readonly abort: AbortController;
  private closed: boolean;
  private running: Promise<void> | null;
  private createdWaiters: (() => void)[];
  private created: boolean;
  /** Ends the current stream only (the loop then opens the next). */
  private current: AbortController | null;
  private readonly onFailover: (endpoint: string) => void;

  constructor(opts: PrefixWatchOptions) {
    this.opts = opts;
    this.next = opts.after + 1;
    this.abort = new AbortController();
    this.closed = false;
    this.running = null;
    this.createdWaiters = [];
    this.created = false;
    this.current = null;
    this.onFailover = () => this.current?.abort();
    opts.client.failoverListeners.add(this.onFailover);
  }

  /** Starts watching; resolves once etcd confirmed the first watch. */
  start(): Promise<void> {
    this.running ??= this.run();
    return new Promise((resolve) => {
      if (this.created) resolve();
      else this.createdWaiters.push(resolve);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.opts.client.failoverListeners.delete(this.onFailover);
    this.abort.abort();
    for (const w of this.createdWaiters) w();
    this.createdWaiters = [];
    await this.running;
  }

  private async run(): Promise<void> {
    let pause = RETRY_FIRST;
    while (!this.closed) {
      const endpoint = this.opts.client.endpoint;
      try {
        const healthy = await this.stream(endpoint);
        if (healthy) pause = RETRY_FIRST;
        if (!this.closed) this.opts.client.failedOver(endpoint, 'watch stream ended');
      } catch (err) {
        if (this.closed) return;
        if (this.opts.client.endpoint === endpoint) this.opts.client.failedOver(endpoint, `watch failed: ${describe(err)}`);
        else pause = 0;
      }
      if (this.closed) return;
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(Math.max(pause, RETRY_FIRST) * 2, RETRY_MAX);
    }
  }

  /** One streaming request; true when it delivered at least its creation. */
  private async stream(endpoint: string): Promise<boolean> {
    const body = {
      create_request: { key: b64(this.opts.prefix), range_end: prefixEnd(this.opts.prefix), start_revision: String(this.next), prev_kv: true },
    };
    this.current = new AbortController();
    const res = await request(`${endpoint}/v3/watch`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: await this.opts.client.headers(),
      dispatcher: this.opts.client.dispatcher,
      signal: AbortSignal.any([this.abort.signal, this.current.signal]),
      bodyTimeout: 0,
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    let buffered = '';
    let healthy = false;
    for await (const chunk of res.body) {
      buffered += (chunk as Buffer).toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === '') continue;
        const msg = JSON.parse(line) as { result?: RawResult; error?: { message?: string } };
        if (msg.error !== undefined) throw new Error(msg.error.message ?? 'watch error');
        const result = msg.result ?? {};
        if (result.created === true) {
          healthy = true;
          this.markCreated();
        }
        if (result.canceled === true) {
          const compacted = Number(result.compact_revision ?? 0);
          if (compacted > 0) {
            this.opts.log?.info({ endpoint, compacted }, `etcd ${endpoint}: watch history compacted at ${compacted}: reading the prefix again`);
            this.next = (await this.opts.onReset()) + 1;
            return true;
          }
          throw new Error(`watch canceled: ${result.cancel_reason ?? 'no reason given'}`);
        }
        const events = result.events ?? [];
        if (events.length === 0) continue;
        const out = events.map(toEvent);
        this.next = Math.max(this.next, out[out.length - 1].kv.modRevision + 1);
        this.opts.onEvents(out);
      }
    }
    return healthy;
  }

  private markCreated(): void {
    this.created = true;
    for (const w of this.createdWaiters) w();
    this.createdWaiters = [];
  }
}

function toEvent(e: RawEvent): WatchEvent {
  return {
    type: e.type === 'DELETE' ? 'delete' : 'put',
    kv: toKeyValue(e.kv ?? {}),
    prev: e.prev_kv === undefined ? null : toKeyValue(e.prev_kv),
  };
}
