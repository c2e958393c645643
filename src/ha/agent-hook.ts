// The hook runner of a proxy whose VIPs are moved by a `tandem vip-agent` sidecar
// (`ha.agent: true`): the proxy has no privilege to touch addresses, so "running the
// hook" is asking the agent over the event stream and, for MASTER, waiting for its
// answer. The elector confirms a lease (serving) only after its MASTER hook succeeded;
// here that means after the agent added the address and sent the first gratuitous ARP,
// so a planned handover or failback through the sidecar stays make-before-break: the old
// holder removes the VIP only once the new holder's agent has it up.
//
// A MASTER run lasts as long as its lease: when the lease's signal aborts, the wait
// ends at once, and the BACKUP or FAULT the elector publishes next makes the agent stop
// its MASTER run (it kills the hook's processes) before it removes the address.
//
// BACKUP and FAULT are published and not waited for: the elector's loop must not stall
// on a removal, and an agent that is not connected removes every VIP anyway (it does so
// whenever it loses the stream). STOP, the last step of a stop, waits for the agent's
// report (at most the timeout): the proxy closes its listeners only after it, so no SYN
// reaches a closed port on an address this host still holds (it would be reset; once the
// address is gone, the client's retransmission goes to the new holder).

import type { EventBus, HookEvent, TandemEvent } from '../events.ts';
import type { Logger } from '../log.ts';
import type { HookOutcome, HookRunner, HookState } from './hook.ts';

export interface AgentHookOptions {
  readonly bus: EventBus;
  readonly node: string;
  readonly vip: string;
  readonly address: string;
  readonly interface: string;
  /** How long a MASTER run waits for the agent's report before it counts as failed. */
  readonly timeout: number;
  readonly log: Logger;
}

interface Waiting {
  readonly state: HookState;
  readonly epoch: number;
  readonly resolve: (outcome: HookOutcome) => void;
  readonly timer: NodeJS.Timeout;
  readonly started: number;
  readonly done: () => void;
}

/** Runs one VIP's hook through the sidecar. */
export class AgentHook implements HookRunner {
  private readonly opts: AgentHookOptions;
  private waiting: Waiting | null;
  private readonly onEvent: (event: TandemEvent) => void;

  constructor(opts: AgentHookOptions) {
    this.opts = opts;
    this.waiting = null;
    this.onEvent = (event) => {
      if (event.type === 'hook' && event.vip === opts.vip) this.reported(event);
    };
    opts.bus.on('event', this.onEvent);
  }

  run(state: HookState, epoch: number, signal?: AbortSignal): Promise<HookOutcome> {
    const o = this.opts;
    this.settle('superseded');
    o.bus.publish({
      type: 'vip', vip: o.vip, state, node: o.node, holder: state === 'MASTER' ? o.node : null,
      epoch, address: o.address, interface: o.interface, leaseRemaining: 0, hookRun: true,
    });
    if (state === 'MASTER') return this.confirmed(epoch, signal);
    if (state !== 'STOP') return Promise.resolve('ok');
    // STOP: the agent's report that the address is off this host, or the timeout (an agent
    // gone removes every address itself): the stop goes on either way, so a missing report
    // is logged, not a failure to retry.
    return this.wait('STOP', epoch, () => {
      o.log.warn(
        { event: 'hook', vip: o.vip, state: 'STOP', epoch, runner: 'agent', outcome: 'unconfirmed', reason: 'no report' },
        `vip hook (agent): ${o.vip} STOP (epoch ${epoch}) not reported done within ${o.timeout} ms: stopping anyway`,
      );
      this.settle('ok');
    });
  }

  /** MASTER: the agent's report that the address is up, for as long as the lease (`signal`) lasts. */
  private confirmed(epoch: number, signal?: AbortSignal): Promise<HookOutcome> {
    const o = this.opts;
    const aborted = () => {
      o.log.warn(
        { event: 'hook', vip: o.vip, state: 'MASTER', epoch, runner: 'agent', outcome: 'failed', reason: 'lease lost' },
        `vip hook (agent): ${o.vip} MASTER (epoch ${epoch}) stopped: the lease was lost or is in doubt`,
      );
      this.settle('failed');
    };
    const run = this.wait('MASTER', epoch, () => {
      o.log.error(
        { event: 'hook', vip: o.vip, state: 'MASTER', epoch, runner: 'agent', outcome: 'failed', reason: 'no report' },
        `vip hook (agent): ${o.vip} MASTER (epoch ${epoch}) not reported done within ${o.timeout} ms: is the vip-agent running?`,
      );
      this.settle('failed');
    }, () => signal?.removeEventListener('abort', aborted));
    if (signal?.aborted === true) aborted();
    else signal?.addEventListener('abort', aborted, { once: true });
    return run;
  }

  /** Waits for the agent's report of `state` at `epoch`; `late` runs when none comes within the timeout, `done` when the wait ends. */
  private wait(state: HookState, epoch: number, late: () => void, done: () => void = () => {}): Promise<HookOutcome> {
    return new Promise<HookOutcome>((resolve) => {
      const timer = setTimeout(late, this.opts.timeout);
      this.waiting = { state, epoch, resolve, timer, started: performance.now(), done };
    });
  }

  /** Stops listening; a run still waiting counts as superseded. */
  close(): void {
    this.settle('superseded');
    this.opts.bus.off('event', this.onEvent);
  }

  private reported(event: HookEvent): void {
    const w = this.waiting;
    if (w === null || event.state !== w.state || event.epoch !== w.epoch) return;
    const o = this.opts;
    const confirmedMs = Math.round(performance.now() - w.started);
    o.log[event.outcome === 'ok' ? 'info' : 'error'](
      { event: 'hook', vip: o.vip, state: w.state, epoch: event.epoch, runner: 'agent', outcome: event.outcome, durationMs: event.ms, confirmedMs },
      `vip hook (agent): ${o.vip} ${w.state} (epoch ${event.epoch}) ${event.outcome === 'ok' ? 'done' : 'failed'} in ${event.ms} ms, confirmed after ${confirmedMs} ms`,
    );
    // A STOP the agent could not complete is the agent's to deal with (it ignores the same
    // state published again, so a retry from here would only wait out the timeout).
    this.settle(w.state === 'STOP' ? 'ok' : event.outcome);
  }

  private settle(outcome: HookOutcome): void {
    const w = this.waiting;
    if (w === null) return;
    this.waiting = null;
    clearTimeout(w.timer);
    w.done();
    w.resolve(outcome);
  }
}
