// A keep-alive HTTP client in the lab's client namespace: one request to a VIP every
// 10 ms over node:http's keep-alive agent, each given up after 2 s, reporting whether it
// was answered and, if not, why. What browsers and service clients do to a VIP, as
// opposed to the Prober's new connection per probe.

import type { ChildProcess } from 'node:child_process';
import { LISTEN_PORT, VIP_ADDR, type HaLab } from './lab.ts';

export interface KeepAliveResult {
  readonly at: number;
  readonly ok: boolean;
  /** 'ok', or the error's code ('ECONNRESET', 'timeout', ...). */
  readonly why: string;
  /** The request went out on a connection an earlier request had used. */
  readonly reused: boolean;
}

export class KeepAliveClient {
  readonly results: KeepAliveResult[] = [];
  private readonly child: ChildProcess;
  private readonly done: Promise<void>;
  private readonly firstAnswer: Promise<void>;

  constructor(h: HaLab, vip: string) {
    const script = `
      const http = require('node:http');
      const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
      const tick = () => {
        const at = performance.timeOrigin + performance.now();
        let done = false;
        const end = (ok, why, reused) => {
          if (done) return;
          done = true;
          process.stdout.write(at.toFixed(2) + ' ' + (ok ? 1 : 0) + ' ' + why + ' ' + (reused ? 1 : 0) + '\\n');
        };
        const req = http.get({ host: ${JSON.stringify(VIP_ADDR[vip])}, port: ${LISTEN_PORT}, path: '/', agent, timeout: 2000 }, (res) => {
          res.resume();
          res.on('end', () => end(res.statusCode === 200, res.statusCode === 200 ? 'ok' : 'status-' + res.statusCode, req.reusedSocket));
          res.on('error', (e) => end(false, e.code || 'error', req.reusedSocket));
        });
        req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
        req.on('error', (e) => end(false, e.code || 'error', req.reusedSocket));
      };
      const timer = setInterval(tick, 10);
      process.on('SIGTERM', () => { clearInterval(timer); setTimeout(() => process.exit(0), 2100); });
    `;
    const offset = performance.timeOrigin;
    this.child = h.lab.spawn(h.ns.client, [process.execPath, '-e', script]);
    let buf = '';
    let answered: () => void = () => {};
    this.firstAnswer = new Promise((r) => (answered = r));
    this.child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const [at, ok, why, reused] = buf.slice(0, nl).split(' ');
        buf = buf.slice(nl + 1);
        this.results.push({ at: Number(at) - offset, ok: ok === '1', why, reused: reused === '1' });
        if (ok === '1') answered();
      }
    });
    this.done = new Promise((r) => this.child.once('exit', () => r()));
  }

  /** Resolves once a request was answered (the client got through), or fails after `ms`. */
  async answered(ms = 15_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer through the VIP within ${ms} ms`)), ms)));
    await Promise.race([this.firstAnswer, late]).finally(() => clearTimeout(timer));
  }

  /** Stops sending; resolves once every request in flight has reported. */
  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await this.done;
    this.results.sort((a, b) => a.at - b.at);
  }

  failures(): KeepAliveResult[] {
    return this.results.filter((r) => !r.ok);
  }
}
