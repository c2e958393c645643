// Listener addresses shared by data planes. Each data plane binds its own socket with
// SO_REUSEPORT and the kernel spreads new connections over their sockets. (node:cluster's
// default, where the primary accepts and hands each connection to a worker, leaves a
// connection hanging forever when the worker it was being handed to dies; with
// SO_REUSEPORT a dying worker's queued connections are reset, and clients can retry.)
//
// Two things follow, which the control plane settles before any data plane binds:
// * Port 0 would give every data plane a port of its own. The control plane turns it into a
//   real free port once per listener and keeps it across reloads and worker restarts.
// * SO_REUSEPORT would let a second tandem on the same address share the port instead
//   of failing. The control plane first binds every new address plainly, for a moment; that
//   fails with EADDRINUSE while anyone else holds it, as a plain bind would.
// Another process could take a port in the moment between this check and the first
// worker's bind; on loopback tests this has not been seen.

import { createServer, type Server } from 'node:net';
import type { Config } from '../config/types.ts';

interface Pin {
  readonly host: string;
  /** The port as configured (0 for any). */
  readonly configured: number;
  /** The port the data planes bind. */
  readonly port: number;
}

/** Fixed, checked ports per listener name. */
export class PortPins {
  private pins: Map<string, Pin>;

  constructor() {
    this.pins = new Map();
  }

  /**
   * The config data planes get: every listener on a fixed port that was free when checked
   * (listeners that keep their name, host and configured port keep their port without a
   * check, since the data planes hold it), and no admin or HA part, which only the control plane
   * runs. Rejects with the bind error of a busy address. Call keep() with the pins once
   * the config is in force.
   */
  async resolve(config: Config): Promise<{ config: Config; pins: Map<string, Pin> }> {
    const pins = new Map<string, Pin>();
    // Bind every new address before closing any, so that two port-0 listeners on one host differ.
    const probes: Server[] = [];
    try {
      for (const l of config.listeners) {
        const old = this.pins.get(l.name);
        if (old !== undefined && old.host === l.host && old.configured === l.port) {
          pins.set(l.name, old);
          continue;
        }
        const probe = createServer();
        probes.push(probe);
        const port = await new Promise<number>((resolve, reject) => {
          probe.once('error', reject);
          probe.listen({ host: l.host, port: l.port }, () => {
            const a = probe.address();
            resolve(typeof a === 'object' && a !== null ? a.port : l.port);
          });
        });
        pins.set(l.name, { host: l.host, configured: l.port, port });
      }
    } finally {
      await Promise.all(probes.map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))));
    }
    const listeners = config.listeners.map((l) => (l.port === 0 ? { ...l, port: pins.get(l.name)!.port } : l));
    return { config: { ...config, listeners, admin: null, ha: null }, pins };
  }

  /** The pins of the config now in force. */
  keep(pins: Map<string, Pin>): void {
    this.pins = pins;
  }
}
