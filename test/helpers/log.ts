// Loggers for tests of code that takes one (src/log.ts): a capturing one that keeps each
// line as a parsed object, and a silent one.

import pino from 'pino';
import { loggerOptions, silentLogger, type Logger } from '../../src/log.ts';

export interface LogLine {
  readonly level: string;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A logger at `trace` whose lines land in `lines`, parsed. */
export function captureLogger(lines: LogLine[] = []): { log: Logger; lines: LogLine[] } {
  const log = pino(loggerOptions('trace'), { write: (s: string) => lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

export { silentLogger };

/** Every JSON line of `text` (a process's stderr), skipping anything that is not one. */
export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const v = JSON.parse(line) as LogLine;
      if (typeof v.level === 'string' && typeof v.msg === 'string') out.push(v);
    } catch {}
  }
  return out;
}

/** A logger at `trace` that pushes each line's message, with `prefix` before it, into `messages`. */
export function messageLogger(messages: string[], prefix = ''): Logger {
  return pino(loggerOptions('trace'), { write: (s: string) => messages.push(prefix + (JSON.parse(s) as LogLine).msg) });
}
