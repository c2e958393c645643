// Reading tandem's access log in tests, and a backend that records what reached it.
//
//   const lines = readLog(file);                               // every line so far, parsed
//   const line = await waitForLine(file, (l) => l.path === '/x'); // the first such line
//   const rec = await startRecorder();                         // rec.seen: headers of each request

import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One access log line, as docs/configuration.md#accesslog documents it. */
export interface LogLine {
  time: string;
  requestId: string;
  client: string;
  method: string | null;
  host: string | null;
  path: string | null;
  protocol: string | null;
  status: number;
  bytes: number;
  received: number;
  duration: number;
  pool: string | null;
  backend: string | null;
  retries: number;
  error: string | null;
  upgrade: string | null;
  traceId: string | null;
}

/** The lines of `file` written so far; none when it does not exist. */
export function readLog(file: string): LogLine[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  // A line being written may not be complete yet: only whole lines count.
  const end = text.lastIndexOf('\n');
  return end < 0 ? [] : text.slice(0, end).split('\n').map((l) => JSON.parse(l) as LogLine);
}

/** Waits for the first line of `file` that `match` accepts (lines are written after the answer). */
export async function waitForLine(file: string, match: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = readLog(file).find(match);
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no access log line matched within ${timeoutMs} ms; lines:\n${readLog(file).map((l) => JSON.stringify(l)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What a Recorder saw of one request. */
export interface Seen {
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly raw: readonly string[];
}

export interface Recorder {
  readonly url: string;
  readonly server: Server;
  /** Every request, in order. */
  readonly seen: Seen[];
  /** The request whose path is `path` (the last one, if several). */
  get(path: string): Seen | undefined;
  close(): Promise<void>;
}

/**
 * A backend that records each request and answers `ok <path>`. Paths starting with
 * `/own-id` are answered with an `X-Request-Id` of the backend's own.
 */
export async function startRecorder(): Promise<Recorder> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, raw: req.rawHeaders });
      const body = `ok ${req.url}`;
      const headers: Record<string, string | number> = { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) };
      if (req.url?.startsWith('/own-id')) headers['x-request-id'] = 'set-by-the-backend';
      res.writeHead(200, headers);
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    seen,
    get: (path) => seen.findLast((s) => s.url === path),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
