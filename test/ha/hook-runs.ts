// The hook runs a lab node logged (in-process, or by its vip-agent sidecar), in the order
// they finished, with the epoch each ran at and where in the node's output the line is:
// a run at an offset past a mark taken earlier finished after that mark.

import type { HaLab } from './lab.ts';

export interface HookRun {
  readonly vip: string;
  readonly state: 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP';
  readonly epoch: number;
  /** How long the run took, as the node logged it. */
  readonly ms: number;
  /** Offset of the log line in the node's output. */
  readonly offset: number;
}

const LINE = /vip hook: (\S+) (MASTER|BACKUP|FAULT|STOP) \S+ \S+ \(epoch (\d+)\) done in (\d+) ms/g;

export function hookRuns(h: HaLab, id: string): HookRun[] {
  const out = h.nodes.get(id)?.output() ?? '';
  return [...out.matchAll(LINE)].map((m) => ({ vip: m[1], state: m[2] as HookRun['state'], epoch: Number(m[3]), ms: Number(m[4]), offset: m.index }));
}
