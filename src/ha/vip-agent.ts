// `tandem vip-agent`: the sidecar for deployments where the proxy stays unprivileged. It
// follows the proxy's admin event stream and runs the VIP hook (with NET_ADMIN) for
// every VIP event, with the same serialised, coalescing runner tandem uses in-process.
//
// Fail safe, never two holders: when the stream closes (the proxy died) the agent removes
// every VIP at once, and when it stays silent for longer than a lease (the proxy hangs, or
// the admin address is cut off) likewise; by then the peer may hold the lease. On
// (re)connect the server first sends every VIP's current state, so the agent reconciles:
// a VIP this node does not hold is removed, one it holds is added and announced.
//
// Every run is reported back (POST /api/v1/vips/:vip/hook): a proxy with `ha.agent: true`
// confirms a lease only once the MASTER run is reported done, so a handover through the
// sidecar stays make-before-break.

import { setPriority } from 'node:os';
import { createParser } from 'eventsource-parser';
import type { VipEvent } from '../events.ts';
import { log as rootLog, type Logger } from '../log.ts';
import { Announcer } from './announcer.ts';
import { BUILTIN_HOOK, BuiltinHook } from './builtin-hook.ts';
import { VipHook, type HookRunner, type HookState } from './hook.ts';
import { LeaseFence, pingLeases } from './lease-fence.ts';

export interface VipAgentOptions {
  /** Base URL of the proxy's admin API, e.g. http://127.0.0.1:9901. */
  readonly admin: string;
  /** Hook executable (scripts/vip-hook.sh), or `builtin`: the announcer kept warm (builtin-hook.ts). */
  readonly hook: string;
  readonly token?: string | null;
  /** Lease duration in ms; default: read from GET /api/v1/status, else 3 s. */
  readonly leaseDuration?: number;
  readonly hookTimeout?: number;
  /** Gratuitous ARP settings passed to the hook; default from TANDEM_GARP_* or 3, 200 ms, 60 s. */
  readonly garpCount?: number;
  readonly garpInterval?: number;
  readonly garpRefresh?: number;
  /** Pause between connection attempts (default 200 ms). */
  readonly reconnectEvery?: number;
  /** Default: the process's logger, with `component: vip-agent`. */
  readonly log?: Logger;
  /** Stops the agent (then every VIP is removed); default: SIGTERM or SIGINT. */
  readonly signal?: AbortSignal;
}

interface VipState {
  readonly hook: HookRunner;
  state: HookState | null;
  epoch: number;
  /** The last event that made this VIP MASTER here, to add it again after a fence. */
  master: VipEvent | null;
  /** Removed because its lease ran out by the proxy's last word, while the proxy said MASTER. */
  fenced: boolean;
  /** Aborts the MASTER run of the current lease (its hook process is killed) once the lease is gone. */
  leading: AbortController | null;
}

/** The VIP is no longer this node's: leader-only work still running for it stops. */
function endLeading(v: VipState): void {
  v.leading?.abort();
  v.leading = null;
}

/** Lease assumed until the proxy tells us its own. */
const DEFAULT_LEASE = 3000;

/** Runs the agent until stopped; resolves with the exit code. */
export async function runVipAgent(opts: VipAgentOptions): Promise<number> {
  const log = opts.log ?? rootLog.child({ component: 'vip-agent' });
  const base = opts.admin.replace(/\/+$/, '');
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const reconnectEvery = opts.reconnectEvery ?? 200;
  const vips = new Map<string, VipState>();
  // Kept warm from the start: a takeover then starts no process.
  const announcer = opts.hook === BUILTIN_HOOK ? new Announcer(log) : null;
  try {
    await announcer?.start();
  } catch (err) {
    log.error({ event: 'announcer', err: (err as Error).message }, (err as Error).message);
    return 1;
  }

  const stop = new AbortController();
  let onSignal: (() => void) | null = null;
  if (opts.signal !== undefined) {
    if (opts.signal.aborted) stop.abort();
    else opts.signal.addEventListener('abort', () => stop.abort(), { once: true });
  } else {
    onSignal = () => stop.abort();
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  }

  const apply = (event: VipEvent): Promise<unknown> => {
    let v = vips.get(event.vip);
    if (v === undefined) {
      const runner = {
        vip: event.vip,
        address: event.address,
        interface: event.interface,
        timeout: opts.hookTimeout ?? 5000,
        garpCount: opts.garpCount ?? envInt('TANDEM_GARP_COUNT', 3),
        garpInterval: opts.garpInterval ?? envInt('TANDEM_GARP_INTERVAL', 200),
        garpRefresh: opts.garpRefresh ?? envInt('TANDEM_GARP_REFRESH', 60_000),
        log,
      };
      v = {
        hook: announcer !== null ? new BuiltinHook({ ...runner, announcer }) : new VipHook({ ...runner, path: opts.hook, node: event.node }),
        state: null,
        epoch: -1,
        master: null,
        fenced: false,
        leading: null,
      };
      vips.set(event.vip, v);
    }
    v.fenced = false;
    if (event.state === 'MASTER') v.master = event;
    // A new epoch while MASTER is a won split brain: announce again.
    if (v.state === event.state && (event.state !== 'MASTER' || v.epoch === event.epoch)) return Promise.resolve();
    v.state = event.state;
    v.epoch = event.epoch;
    // As in-process: a MASTER run lasts only as long as the lease it runs for. Whatever
    // comes next for this VIP (a newer epoch, BACKUP, FAULT, STOP) ends it.
    endLeading(v);
    if (event.state === 'MASTER') v.leading = new AbortController();
    const started = performance.now();
    return v.hook.run(event.state, event.epoch, v.leading?.signal).then((outcome) => {
      if (outcome !== 'superseded') void report(event.vip, { state: event.state, epoch: event.epoch, outcome, ms: Math.round(performance.now() - started) });
      return outcome;
    });
  };

  /** Tells the proxy how a run ended; a proxy that is gone or does not wait loses nothing. */
  const report = async (vip: string, body: { state: HookState; epoch: number; outcome: 'ok' | 'failed'; ms: number }): Promise<void> => {
    try {
      const res = await fetch(`${base}/api/v1/vips/${encodeURIComponent(vip)}/hook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(2000),
      });
      if (!res.ok) log.warn({ vip, state: body.state, epoch: body.epoch, status: res.status }, `reporting the ${body.state} run of ${vip} to the proxy: HTTP ${res.status}`);
      await res.body?.cancel();
    } catch (err) {
      if (!stop.signal.aborted) log.warn({ vip, state: body.state, epoch: body.epoch, err: (err as Error).message }, `reporting the ${body.state} run of ${vip} to the proxy: ${(err as Error).message}`);
    }
  };

  /** The proxy is gone or silent: nothing may stay up. */
  const removeAll = (why: string): Promise<unknown> => {
    const held = [...vips.entries()].filter(([, v]) => v.state !== 'FAULT' && v.state !== 'STOP' && v.state !== 'BACKUP');
    if (held.length > 0) log.warn({ event: 'vip-remove', vips: held.map(([name]) => name), reason: why }, `${why}: removing ${held.map(([name]) => name).join(', ')}`);
    return Promise.all(held.map(([, v]) => {
      endLeading(v);
      v.state = 'FAULT';
      return v.hook.run('FAULT', v.epoch);
    }));
  };

  let lease = opts.leaseDuration ?? null;
  // A quarter of a lease before the proxy's lease of a VIP ends with no newer word, the
  // VIP goes: by then the proxy itself has been in doubt for a quarter of a lease.
  const fence = new LeaseFence(() => Math.floor((lease ?? DEFAULT_LEASE) / 4), (vip) => {
    const v = vips.get(vip);
    if (v === undefined || v.state !== 'MASTER') return;
    log.warn({ event: 'vip-remove', vips: [vip], reason: 'lease' }, `the proxy's lease of ${vip} is running out with no word of a renewal: removing ${vip}`);
    endLeading(v);
    v.state = 'FAULT';
    v.fenced = true;
    void v.hook.run('FAULT', v.epoch);
  });
  /** What a ping says of the leases: watch those held here; add back a fenced VIP whose lease was renewed after all. */
  const heardLeases = (leases: Map<string, number>): void => {
    for (const [name, v] of vips) {
      const left = leases.get(name);
      if (left === undefined) fence.clear(name);
      else if (v.state === 'MASTER') fence.heard(name, left);
      else if (v.fenced && v.master !== null) {
        log.info({ event: 'vip-restore', vip: name, leaseRemaining: left }, `the proxy renewed its lease of ${name} after all: adding it back`);
        void apply(v.master).then(() => fence.heard(name, left));
      }
    }
  };
  let connectedOnce = false;
  let lastError = '';
  while (!stop.signal.aborted) {
    if (opts.leaseDuration === undefined) lease = (await readLease(base, opts.token ?? null, stop.signal)) ?? lease;
    let silence = lease ?? DEFAULT_LEASE;
    const conn = new AbortController();
    const onStop = () => conn.abort();
    stop.signal.addEventListener('abort', onStop, { once: true });
    let timer: NodeJS.Timeout | null = null;
    let silent = false;
    const arm = () => {
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        silent = true;
        conn.abort();
      }, silence);
    };
    try {
      arm();
      const res = await fetch(`${base}/api/v1/events`, { headers, signal: conn.signal });
      if (!res.ok || res.body === null) throw new Error(`GET /api/v1/events answered ${res.status}`);
      if (!connectedOnce || lastError !== '') log.info({ event: 'connected', admin: base, lease: silence }, `following ${base}/api/v1/events (lease ${silence} ms)`);
      connectedOnce = true;
      lastError = '';
      // The proxy did not tell its lease before the stream opened (it was still starting, or
      // slow to answer): ask again while following it, so the fallback does not stay.
      if (lease === null && opts.leaseDuration === undefined) {
        void learnLease(base, opts.token ?? null, conn.signal).then((l) => {
          if (l === null || conn.signal.aborted) return;
          lease = silence = l;
          arm();
          log.info({ event: 'lease', admin: base, lease: l }, `the proxy's lease is ${l} ms: removing every VIP after ${l} ms of silence`);
        });
      }
      await readEvents(res.body, arm, (type, data) => {
        if (type === 'ping') return heardLeases(pingLeases(data));
        if (type !== 'vip') return;
        let event: VipEvent;
        try {
          event = JSON.parse(data) as VipEvent;
        } catch {
          return;
        }
        if (typeof event.vip !== 'string' || typeof event.address !== 'string' || typeof event.interface !== 'string') return;
        if (event.state === 'MASTER' && event.leaseRemaining > 0) fence.heard(event.vip, event.leaseRemaining);
        else fence.clear(event.vip);
        void apply(event);
      });
      if (!stop.signal.aborted) await removeAll('the proxy closed the event stream');
    } catch (err) {
      if (!stop.signal.aborted) {
        const why = silent ? `no event for ${silence} ms` : `event stream: ${(err as Error).message}`;
        if (why !== lastError) log.warn({ event: 'disconnected', admin: base, reason: why }, why);
        lastError = why;
        await removeAll(silent ? `the proxy was silent for ${silence} ms` : 'the proxy cannot be reached');
      }
    } finally {
      fence.clearAll();
      if (timer !== null) clearTimeout(timer);
      stop.signal.removeEventListener('abort', onStop);
    }
    if (!stop.signal.aborted) await pause(reconnectEvery, stop.signal);
  }
  if (onSignal !== null) {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  // Stopping the agent leaves no VIP behind: without it nobody would remove one later.
  for (const v of vips.values()) endLeading(v);
  await Promise.all([...vips.values()].map((v) => (v.state === 'STOP' ? null : v.hook.run('STOP', v.epoch))));
  announcer?.close();
  log.info({ event: 'stopped' }, 'stopped');
  return 0;
}

/**
 * As keepalived's vrrp_priority: the agent works for a moment per takeover, and then it
 * should not wait behind busy processes for the CPU. `tandem vip-agent` asks for nice
 * -10; where that is not allowed (no CAP_SYS_NICE) it runs as it is, and says so.
 */
export function raisePriority(log: Logger = rootLog.child({ component: 'vip-agent' })): void {
  try {
    setPriority(-10);
    log.info({ event: 'priority', nice: -10 }, 'running at nice -10');
  } catch (err) {
    log.info({ event: 'priority', nice: 0, reason: (err as Error).message }, `running at normal priority (nice -10 not allowed: ${(err as Error).message})`);
  }
}

/**
 * Reads `text/event-stream` (parsed by eventsource-parser, as the WHATWG spec says) and
 * calls `alive()` for every chunk received, whatever it holds, and `onEvent(type, data)`
 * per dispatched event.
 */
async function readEvents(body: ReadableStream<Uint8Array>, alive: () => void, onEvent: (type: string, data: string) => void): Promise<void> {
  const parser = createParser({ onEvent: (e) => onEvent(e.event ?? 'message', e.data) });
  const decoder = new TextDecoder();
  for await (const chunk of body) {
    alive();
    parser.feed(decoder.decode(chunk, { stream: true }));
  }
}

/** readLease, a few times while `signal` lasts: null when the proxy never told. */
async function learnLease(base: string, token: string | null, signal: AbortSignal): Promise<number | null> {
  for (let i = 0; i < 5 && !signal.aborted; i++) {
    const l = await readLease(base, token, signal);
    if (l !== null) return l;
    await pause(200, signal);
  }
  return null;
}

/** The lease duration the proxy reports in GET /api/v1/status, or null. */
async function readLease(base: string, token: string | null, signal: AbortSignal): Promise<number | null> {
  try {
    const res = await fetch(`${base}/api/v1/status`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.any([signal, AbortSignal.timeout(1000)]),
    });
    if (!res.ok) return null;
    return findLease(await res.json());
  } catch {
    return null;
  }
}

/** The first positive `leaseDuration` (or `leaseDurationMs`) anywhere in a status document. */
export function findLease(doc: unknown, depth = 0): number | null {
  if (typeof doc !== 'object' || doc === null || depth > 4) return null;
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    if ((k === 'leaseDuration' || k === 'leaseDurationMs') && typeof v === 'number' && v > 0) return v;
  }
  for (const v of Object.values(doc as Record<string, unknown>)) {
    const found = findLease(v, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

function envInt(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v >= 0 ? v : fallback;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
