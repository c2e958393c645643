// The control plane's log of its event bus: every backend state change, VIP transition
// and reload becomes one line, written here once for the whole instance (data planes
// report their ejections up, so they appear here too). docs/configuration.md lists the
// events and their fields.

import type { BackendEvent, EventBus, ReloadEvent, TandemEvent, VipEvent } from '../events.ts';
import { describeChanges } from '../config/diff.ts';
import type { Logger } from '../log.ts';
import type { Pool } from '../pool/pool.ts';

/** Backends of a pool that can take requests now, primaries (`active`) and backups. */
export function availableIn(pool: Pool | undefined): { active: number; backup: number } {
  let active = 0;
  let backup = 0;
  for (const b of pool?.backends ?? []) {
    if (!b.isAvailable()) continue;
    if (b.config.backup) backup++;
    else active++;
  }
  return { active, backup };
}

/** Writes the bus's events to `log` from now on. */
export function logEvents(bus: EventBus, log: Logger, pools: () => ReadonlyMap<string, Pool>): void {
  const vips = new Map<string, VipEvent>();
  const onEvent = (event: TandemEvent) => {
    switch (event.type) {
      case 'backend': return backendLine(log, event, pools().get(event.pool));
      case 'vip': {
        // A hook request to the vip-agent repeats what the elector publishes.
        if (event.hookRun === true) return;
        const previous = vips.get(event.vip);
        vips.set(event.vip, event);
        return vipLine(log, event, previous);
      }
      case 'reload': return reloadLine(log, event);
      default: return;
    }
  };
  bus.on('event', onEvent);
}

function backendLine(log: Logger, e: BackendEvent, pool: Pool | undefined): void {
  const available = availableIn(pool);
  const fields = {
    event: 'backend', pool: e.pool, backend: e.backend, state: e.state, previous: e.previous ?? null, reason: e.reason,
    ...(e.check === undefined ? {} : { check: e.check }),
    ...(e.actor === undefined ? {} : { actor: e.actor }),
    available,
  };
  // A change of the effective weight alone (slow start) is not a change of state.
  if (e.previous === e.state) {
    log.debug(fields, `backend ${e.pool}/${e.backend} weight changed: ${e.reason}`);
    return;
  }
  let msg = `backend ${e.pool}/${e.backend} is ${e.state.toUpperCase()}, reason: ${e.reason}`;
  if (e.actor !== undefined) msg += ` (by ${e.actor})`;
  if (e.check !== undefined) msg += `, check: ${e.check.detail}, check duration: ${e.check.durationMs} ms`;
  msg += `; ${available.active} active and ${available.backup} backup backends left`;
  const none = available.active + available.backup === 0;
  if (none) msg += `; pool ${e.pool} has no backend available`;
  const level = none ? 'error' : e.state === 'down' || e.state === 'ejected' ? 'warn' : 'info';
  log[level](fields, msg);
}

function vipLine(log: Logger, e: VipEvent, previous: VipEvent | undefined): void {
  const fields = {
    event: 'vip', vip: e.vip, state: e.state, previous: previous?.state ?? null, epoch: e.epoch, holder: e.holder,
    node: e.node, address: e.address, interface: e.interface,
  };
  const where = e.holder === null ? 'no holder' : e.holder === e.node ? 'held here' : `held by ${e.holder}`;
  const msg = `VIP ${e.vip} ${e.address} is ${e.state} on ${e.node} (${where}, epoch ${e.epoch})`;
  if (e.state === 'FAULT') log.warn(fields, msg);
  else log.info(fields, msg);
}

function reloadLine(log: Logger, e: ReloadEvent): void {
  const by = e.source === undefined ? '' : ` (${e.source}${e.client === undefined ? '' : ` from ${e.client}`})`;
  const fields = {
    event: 'reload', result: e.result, source: e.source ?? null, ...(e.client === undefined ? {} : { client: e.client }),
    ...(e.durationMs === undefined ? {} : { durationMs: e.durationMs }),
  };
  if (e.result === 'success') {
    log.info({ ...fields, changes: e.changes ?? null }, `reloaded${by}: ${e.changes === undefined ? 'done' : describeChanges(e.changes)}`);
  } else {
    log.error({ ...fields, errors: e.errors }, `reload rejected${by}, running config kept: ${e.errors.join('; ')}`);
  }
}
