// `hook: builtin` (and `tandem vip-agent --hook builtin`): what scripts/vip-hook.sh does,
// done through the announcer kept warm (announcer.ts) instead of a process per run.
//
// MASTER: the address and the first gratuitous ARP (IPv6: unsolicited NA) in one command,
// answered once the packet has left; only then the bookkeeping: the other
// `garpCount - 1` announcements `garpInterval` apart, then one every `garpRefresh` while
// held, from timers in this process, and the log line. BACKUP, FAULT and STOP: the
// timers stop first (a late announcement on a demoted node would flip clients back),
// then the address goes, whatever its prefix length. Serialised and coalescing per VIP
// like any hook, with the same timeout.

import { errors } from '../errors.ts';
import type { Announcer, AnnounceResult } from './announcer.ts';
import { HookQueue, type HookOutcome, type HookRunner, type HookSettings, type HookState } from './hook.ts';

/** The `hook` value that selects the announcer instead of an executable. */
export const BUILTIN_HOOK = 'builtin';

export interface BuiltinHookOptions extends HookSettings {
  readonly announcer: Announcer;
}

/** One VIP's hook run by the announcer. */
export class BuiltinHook implements HookRunner {
  private readonly opts: BuiltinHookOptions;
  private readonly queue: HookQueue;
  private repeat: NodeJS.Timeout | null;

  constructor(opts: BuiltinHookOptions) {
    this.opts = opts;
    this.queue = new HookQueue((state, epoch, signal) => this.exec(state, epoch, signal));
    this.repeat = null;
  }

  run(state: HookState, epoch: number, signal?: AbortSignal): Promise<HookOutcome> {
    return this.queue.run(state, epoch, signal);
  }

  private async exec(state: HookState, epoch: number, signal: AbortSignal | undefined): Promise<HookOutcome> {
    const o = this.opts;
    const started = performance.now();
    if (state !== 'MASTER') this.stopRepeats();
    const command = state !== 'MASTER' ? 'down' : o.garpCount > 0 ? 'up' : 'add';
    // A MASTER run whose lease was lost (or is in doubt) before it started is not this
    // node's to do; once sent, the command takes a millisecond and the BACKUP that
    // follows the loss undoes it.
    const error = signal?.aborted === true ? 'stopped: the lease was lost or is in doubt' : await this.timed(o.announcer.run(command, o.address, o.interface));
    // Bookkeeping, after the announcement.
    const ms = Math.round(performance.now() - started);
    const line = `${o.vip} ${state} ${o.address} ${o.interface} (epoch ${epoch})`;
    const fields = { event: 'hook', vip: o.vip, state, epoch, address: o.address, interface: o.interface, runner: 'builtin', durationMs: ms };
    if (error !== null) {
      o.log.error(
        { ...fields, outcome: 'failed', code: errors.HOOK_FAILED.code, reason: error },
        `${errors.HOOK_FAILED.code}: vip hook ${line} failed after ${ms} ms: ${error}`,
      );
      return 'failed';
    }
    if (state === 'MASTER') this.startRepeats(epoch);
    o.log.info({ ...fields, outcome: 'ok' }, `vip hook: ${line} done in ${ms} ms`);
    return 'ok';
  }

  /** The announcer's answer, or a failure once the hook timeout has passed. */
  private timed(answer: Promise<AnnounceResult>): Promise<AnnounceResult> {
    const timeout = this.opts.timeout;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<AnnounceResult>((resolve) => {
      timer = setTimeout(() => {
        const why = `no answer from the VIP announcer within ${timeout} ms`;
        this.opts.announcer.reset(why);
        resolve(why);
      }, timeout);
    });
    return Promise.race([answer, late]).finally(() => clearTimeout(timer));
  }

  /** The rest of the burst, then the refreshes; each from the announcer, none waited for. */
  private startRepeats(epoch: number): void {
    const o = this.opts;
    this.stopRepeats();
    let sent = 1;
    const next = () => {
      const delay = sent < o.garpCount ? o.garpInterval : o.garpRefresh;
      if (delay <= 0 && sent >= o.garpCount) return;
      this.repeat = setTimeout(() => {
        this.repeat = null;
        sent++;
        void o.announcer.run('announce', o.address, o.interface).then((error) => {
          if (error !== null) o.log.warn({ event: 'announce', vip: o.vip, epoch, reason: error }, `vip ${o.vip}: announcement ${sent} failed: ${error}`);
        });
        next();
      }, Math.max(1, delay));
      this.repeat.unref();
    };
    if (o.garpCount > 0) next();
  }

  private stopRepeats(): void {
    if (this.repeat !== null) clearTimeout(this.repeat);
    this.repeat = null;
  }
}
