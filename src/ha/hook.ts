// The VIP hook, keepalived-style: `HOOK STATE VIP ADDRESS/PREFIX INTERFACE` on every
// state change of a VIP. One runner per VIP: never two hooks at once for the same VIP
// (an `ip addr del` racing an `ip addr add` leaves either outcome), and while one runs
// only the newest requested state waits behind it, so a flapping lease costs at most
// two runs, and the last one is always the current state.

import { spawn } from 'node:child_process';
import { errors } from '../errors.ts';
import type { Logger } from '../log.ts';

export type HookState = 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP';

/** How a requested hook run ended: `superseded` when a newer state replaced it before it started. */
export type HookOutcome = 'ok' | 'failed' | 'superseded';

/** Runs the hook for one VIP. */
export interface HookRunner {
  /** `signal`: leader-only work (MASTER) stops when it aborts, its processes killed. */
  run(state: HookState, epoch: number, signal?: AbortSignal): Promise<HookOutcome>;
}

/** What every hook runner of one VIP is given: the VIP, its address and the announcements. */
export interface HookSettings {
  readonly vip: string;
  /** `10.0.0.100/24` as configured. */
  readonly address: string;
  readonly interface: string;
  readonly timeout: number;
  readonly garpCount: number;
  /** Milliseconds between the gratuitous ARPs of a burst. */
  readonly garpInterval: number;
  /** Milliseconds between refresh announcements while holding; 0: none. */
  readonly garpRefresh: number;
  readonly log: Logger;
}

export interface HookOptions extends HookSettings {
  /** Executable; null: log-only (the transition is printed, nothing runs). */
  readonly path: string | null;
  readonly node: string;
}

interface Request {
  readonly state: HookState;
  readonly epoch: number;
  readonly signal: AbortSignal | undefined;
  readonly waiters: ((outcome: HookOutcome) => void)[];
}

/** Longest hook output kept for the log line of a failed run. */
const OUTPUT_LIMIT = 4096;

/**
 * Serialises and coalesces the runs of one VIP's hook: one at a time, and while one
 * runs only the newest requested state waits behind it (the others are superseded).
 */
export class HookQueue implements HookRunner {
  private readonly exec: (state: HookState, epoch: number, signal: AbortSignal | undefined) => Promise<HookOutcome>;
  private running: boolean;
  private pending: Request | null;

  constructor(exec: (state: HookState, epoch: number, signal: AbortSignal | undefined) => Promise<HookOutcome>) {
    this.exec = exec;
    this.running = false;
    this.pending = null;
  }

  /** Requests a run for `state`; resolves when it ran, or was superseded by a newer request. */
  run(state: HookState, epoch: number, signal?: AbortSignal): Promise<HookOutcome> {
    return new Promise<HookOutcome>((resolve) => {
      if (this.pending !== null) {
        if (this.pending.state === state && this.pending.epoch === epoch) {
          this.pending.waiters.push(resolve);
          return;
        }
        for (const w of this.pending.waiters) w('superseded');
      }
      this.pending = { state, epoch, signal, waiters: [resolve] };
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.pending !== null) {
      const req = this.pending;
      this.pending = null;
      const outcome = await this.exec(req.state, req.epoch, req.signal);
      for (const w of req.waiters) w(outcome);
    }
    this.running = false;
  }
}

/** The hook runner of one VIP that starts the hook executable: serialised and coalescing, with a timeout. */
export class VipHook implements HookRunner {
  private readonly opts: HookOptions;
  private readonly queue: HookQueue;

  constructor(opts: HookOptions) {
    this.opts = opts;
    this.queue = new HookQueue((state, epoch, signal) => this.exec(state, epoch, signal));
  }

  run(state: HookState, epoch: number, signal?: AbortSignal): Promise<HookOutcome> {
    return this.queue.run(state, epoch, signal);
  }

  private exec(state: HookState, epoch: number, signal: AbortSignal | undefined): Promise<HookOutcome> {
    const o = this.opts;
    const line = `${o.vip} ${state} ${o.address} ${o.interface} (epoch ${epoch})`;
    const fields = { event: 'hook', vip: o.vip, state, epoch, address: o.address, interface: o.interface, runner: o.path === null ? 'log-only' : 'script' };
    if (o.path === null) {
      o.log.info(fields, `vip hook (log-only): ${line}`);
      return Promise.resolve('ok');
    }
    const started = performance.now();
    return new Promise<HookOutcome>((resolve) => {
      let output = '';
      let settled = false;
      const finish = (outcome: HookOutcome, why: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const ms = Math.round(performance.now() - started);
        if (outcome === 'ok') o.log.info({ ...fields, outcome, durationMs: ms }, `vip hook: ${line} done in ${ms} ms`);
        else {
          o.log.error(
            { ...fields, outcome, durationMs: ms, code: errors.HOOK_FAILED.code, reason: why, output: output.trim() },
            `${errors.HOOK_FAILED.code}: vip hook ${line} ${why} after ${ms} ms${output ? `: ${output.trim()}` : ''}`,
          );
        }
        resolve(outcome);
      };
      const child = spawn(o.path as string, [state, o.vip, o.address, o.interface], {
        env: {
          ...process.env,
          TANDEM_NODE: o.node,
          TANDEM_VIP: o.vip,
          TANDEM_EPOCH: String(epoch),
          TANDEM_GARP_COUNT: String(o.garpCount),
          TANDEM_GARP_INTERVAL: String(o.garpInterval),
          TANDEM_GARP_REFRESH: String(o.garpRefresh),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
        // Its own process group, so a timeout kills what the hook started too: an `ip addr
        // add` left running could add the VIP after this node had given it up. (The
        // announcer of scripts/vip-hook.sh runs in a session of its own and is not hit.)
        detached: true,
      });
      const collect = (chunk: Buffer) => {
        if (output.length < OUTPUT_LIMIT) output += chunk.toString('utf8').slice(0, OUTPUT_LIMIT - output.length);
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      const stop = (why: string) => {
        // The group, not just the hook; ESRCH means everything in it has already exited.
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        } catch {}
        finish('failed', why);
      };
      const timer = setTimeout(() => stop(`timed out (${o.timeout} ms)`), o.timeout);
      // The lease it runs for was lost or is in doubt: what it does is no longer this node's to do.
      const aborted = () => stop('stopped: the lease was lost or is in doubt');
      if (signal?.aborted === true) aborted();
      signal?.addEventListener('abort', aborted, { once: true });
      child.once('exit', () => signal?.removeEventListener('abort', aborted));
      child.once('error', (err) => finish('failed', `could not start: ${err.message}`));
      // 'exit', not 'close': a background announcer the hook leaves running may hold
      // the pipes open for as long as the VIP is held.
      child.once('exit', (code, signal) => {
        if (code === 0) finish('ok', '');
        else finish('failed', signal !== null ? `killed by ${signal}` : `exited with ${code}`);
      });
    });
  }
}
