// The phases an elector goes through for one VIP, the hook state (keepalived's MASTER,
// BACKUP, FAULT, STOP) each one shows, and the VipEvent published when what a VIP shows
// changes.

import type { EventBus, VipEvent } from '../events.ts';
import type { VipStatus } from './elector-options.ts';
import type { HookState } from './hook.ts';

export type Phase = 'init' | 'backup' | 'acquiring' | 'master' | 'handing' | 'releasing' | 'fault' | 'stopped';

/** The hook state a phase shows: the VIP is up from acquiring until a handover is done. */
export function hookStateOf(phase: Phase): HookState {
  switch (phase) {
    case 'acquiring':
    case 'master':
    case 'handing':
    case 'releasing':
      return 'MASTER';
    case 'fault':
      return 'FAULT';
    case 'stopped':
      return 'STOP';
    default:
      return 'BACKUP';
  }
}

/** Publishes a VipEvent for one VIP of one node whenever its state, holder or epoch changed. */
export class StatePublisher {
  private readonly bus: EventBus;
  private readonly node: string;
  private last: string;

  constructor(bus: EventBus, node: string) {
    this.bus = bus;
    this.node = node;
    this.last = '';
  }

  publishIfChanged(s: VipStatus): void {
    const signature = `${s.state}|${s.holder}|${s.epoch}`;
    if (signature === this.last) return;
    this.last = signature;
    const event: VipEvent = {
      type: 'vip', vip: s.name, state: s.state, node: this.node, holder: s.holder, epoch: s.epoch,
      address: s.address, interface: s.interface, leaseRemaining: s.leaseRemainingMs,
    };
    this.bus.publish(event);
  }
}
