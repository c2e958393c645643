// `tandem status` as text: aligned tables of listeners, backends and VIPs, read from
// the status document of GET /api/v1/status (src/admin/routes/status.ts).

/** The parts of the status document the tables show. */
export interface StatusDocument {
  readonly node: string | null;
  readonly time: number;
  readonly configFile: string | null;
  readonly listeners: readonly { name: string; address: string; bound: boolean; connections: number }[];
  readonly pools: readonly {
    name: string;
    balance: string;
    available: boolean;
    healthChecks?: boolean;
    backends: readonly {
      name: string;
      state: string;
      shown?: string;
      stateSince?: number;
      downtimeMs?: number;
      weight: number;
      runtimeWeight?: number | null;
      effectiveWeight: number;
      active: number;
      requests: number;
      failures: number;
      recentRequests?: number;
      recentFailures?: number;
      backup: boolean;
    }[];
  }[];
  readonly vips: readonly { name: string; address: string; state: string; holder: string | null; epoch: number; leaseRemainingMs: number }[];
}

/** The whole status as text, ending in a newline. */
export function statusTable(s: StatusDocument, now: number): string {
  const parts: string[] = [];
  const head = [`node ${s.node ?? '(no HA node)'}`];
  if (s.configFile !== null) head.push(`config ${s.configFile}`);
  parts.push(head.join(' · '));
  parts.push(table(['LISTENER', 'ADDRESS', 'BOUND', 'CONNECTIONS'],
    s.listeners.map((l) => [l.name, l.address, l.bound ? 'yes' : 'NO', String(l.connections)])));
  const rows: string[][] = [];
  for (const p of s.pools) {
    for (const b of p.backends) {
      const weight = b.runtimeWeight != null ? `${b.runtimeWeight} (runtime; config ${b.weight})` : String(b.weight);
      rows.push([
        `${p.name}/${b.name}${b.backup ? ' (backup)' : ''}`,
        (b.shown ?? b.state).toUpperCase(),
        b.stateSince === undefined ? '-' : duration(now - b.stateSince),
        b.downtimeMs === undefined ? '-' : duration(b.downtimeMs),
        weight,
        b.effectiveWeight === (b.runtimeWeight ?? b.weight) ? '' : String(b.effectiveWeight),
        String(b.active),
        String(b.requests),
        String(b.failures),
        b.recentRequests === undefined ? '-' : `${b.recentFailures}/${b.recentRequests}`,
      ]);
    }
  }
  parts.push(table(['POOL/BACKEND', 'STATE', 'SINCE', 'DOWNTIME', 'WEIGHT', 'EFFECTIVE', 'ACTIVE', 'REQUESTS', 'ERRORS', 'RECENT ERR/REQ'], rows));
  const notes: string[] = [];
  for (const p of s.pools) {
    if (!p.available) notes.push(`pool ${p.name} has no available backend`);
    if (p.healthChecks === false) notes.push(`pool ${p.name} has no health checks: UNCHECKED is up but not verified, FAILING means most recent requests failed`);
  }
  if (notes.length > 0) parts.push(notes.join('\n'));
  if (s.vips.length > 0) {
    parts.push(table(['VIP', 'ADDRESS', 'THIS NODE', 'HOLDER', 'EPOCH', 'LEASE LEFT'],
      s.vips.map((v) => [v.name, v.address, v.state, v.holder ?? '-', String(v.epoch), v.leaseRemainingMs > 0 ? `${(v.leaseRemainingMs / 1000).toFixed(1)}s` : '-'])));
  }
  return parts.join('\n\n') + '\n';
}

/** Columns padded to their widest cell, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** 0s, 42s, 3m12s, 5h07m, 2d03h: whole units, the two largest. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, '0')}h`;
}
