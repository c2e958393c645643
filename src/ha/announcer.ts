// The VIP announcer kept warm: scripts/vip-announcer.pl, started once when HA (or the
// vip-agent) starts, holds a netlink socket and a packet socket and waits on its stdin.
// Taking a VIP over is then one line written to a pipe: the address is added and the
// gratuitous ARP is on the wire about a millisecond later, where starting a hook script
// costs a process, `ip` (13-17 ms) and `arping` (9 ms before it sends) on a busy machine.
//
// One announcer per process, shared by every VIP; commands are answered in order. It
// exits when our end of its stdin closes, so a tandem that dies leaves nothing of it
// announcing. It needs perl (Debian's essential perl-base), CAP_NET_ADMIN and CAP_NET_RAW.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { TandemError, errors } from '../errors.ts';
import type { Logger } from '../log.ts';

export const ANNOUNCER_SCRIPT = fileURLToPath(new URL('../../scripts/vip-announcer.pl', import.meta.url));

export type AnnounceCommand = 'up' | 'add' | 'announce' | 'down';

/** What the announcer did with one command: null when it worked, else why not. */
export type AnnounceResult = string | null;

interface Pending {
  readonly id: number;
  readonly resolve: (result: AnnounceResult) => void;
}

/** Interface names as Linux takes them, as scripts/vip-hook.sh checks them. */
const INTERFACE = /^(?!-)(?!\.{1,2}$)[A-Za-z0-9_.@:-]{1,15}$/;

/** `ADDRESS/PREFIX` to the announcer's two fields, or an error. */
export function splitAddress(cidr: string): { address: string; prefix: number } | string {
  const [address, bits, extra] = cidr.split('/');
  const family = isIP(address);
  const max = family === 6 ? 128 : 32;
  const prefix = bits === undefined ? max : Number(bits);
  if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max) return `invalid address ${JSON.stringify(cidr)} (ADDRESS/PREFIX)`;
  return { address, prefix };
}

/** The shared announcer process of this tandem (or vip-agent). */
export class Announcer {
  private readonly log: Logger;
  private child: ChildProcessWithoutNullStreams | null;
  private starting: Promise<void> | null;
  private readonly pending: Pending[];
  private nextId: number;
  private closed: boolean;

  constructor(log: Logger) {
    this.log = log;
    this.child = null;
    this.starting = null;
    this.pending = [];
    this.nextId = 1;
    this.closed = false;
  }

  /** Starts the process (again, after it died) and waits for it to be ready; throws why it cannot run. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new TandemError(errors.HOOK_FAILED, 'the VIP announcer is closed'));
    if (this.child !== null) return Promise.resolve();
    this.starting ??= this.spawn().finally(() => {
      this.starting = null;
    });
    return this.starting;
  }

  /**
   * Runs one command: `up` adds `cidr` on `dev` and sends the first announcement, and
   * answers once it has left; `add` only adds; `announce` sends another; `down` removes
   * the address.
   */
  async run(command: AnnounceCommand, cidr: string, dev: string): Promise<AnnounceResult> {
    const parts = splitAddress(cidr);
    if (typeof parts === 'string') return parts;
    if (!INTERFACE.test(dev)) return `invalid interface name ${JSON.stringify(dev)} (1 to 15 of letters, digits, _ . @ : -)`;
    try {
      await this.start();
    } catch (err) {
      return (err as Error).message;
    }
    const child = this.child;
    if (child === null) return 'the VIP announcer is not running';
    const id = this.nextId++;
    return new Promise<AnnounceResult>((resolve) => {
      this.pending.push({ id, resolve });
      child.stdin.write(`${id} ${command} ${parts.address} ${parts.prefix} ${dev}\n`);
    });
  }

  /** Kills a process that stopped answering; the next command starts a new one. */
  reset(why: string): void {
    const child = this.child;
    if (child === null) return;
    this.log.error({ event: 'announcer', state: 'killed', reason: why }, `vip announcer killed (${why}); started again on the next command`);
    // Forgotten at once: the next command goes to a new process, not to this dying one.
    this.child = null;
    child.kill('SIGKILL');
    this.fail(`the VIP announcer was killed (${why})`);
  }

  /** Ends the process (it exits on the end of its input); commands still waiting fail. */
  close(): void {
    this.closed = true;
    this.child?.stdin.end();
    this.child = null;
    this.fail('the VIP announcer was closed');
  }

  private spawn(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const child = spawn('perl', [ANNOUNCER_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
      let ready = false;
      let buf = '';
      let stderr = '';
      const refuse = (why: string) => {
        if (ready) return;
        ready = true;
        reject(new TandemError(errors.HOOK_FAILED, `the VIP announcer (${ANNOUNCER_SCRIPT}) cannot run: ${why}`));
      };
      child.once('error', (err) => refuse((err as NodeJS.ErrnoException).code === 'ENOENT' ? 'perl not found (Debian: perl-base)' : err.message));
      // A write to a process that just died fails with EPIPE; its exit fails the commands.
      child.stdin.on('error', () => {});
      child.stderr.on('data', (c: Buffer) => {
        if (stderr.length < 4096) stderr += c.toString('utf8');
      });
      child.stdout.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!ready) {
            if (line.startsWith('0 ready')) {
              ready = true;
              this.child = child;
              this.log.info({ event: 'announcer', announcerPid: child.pid, state: 'ready', note: line.slice(8) }, `vip announcer ready (pid ${child.pid})${line.length > 7 ? ` ${line.slice(8)}` : ''}`);
              resolve();
            } else refuse(line.replace(/^0 error /, ''));
            continue;
          }
          this.answered(line);
        }
      });
      child.once('exit', (code, signal) => {
        refuse(stderr.trim() || `exited with ${signal ?? code}`);
        if (this.child !== child) return;
        this.child = null;
        if (!this.closed) this.log.error({ event: 'announcer', state: 'exited', code, signal, stderr: stderr.trim() }, `vip announcer exited (${signal ?? code})${stderr ? `: ${stderr.trim()}` : ''}; started again on the next command`);
        this.fail(`the VIP announcer exited (${signal ?? code})`);
      });
    });
  }

  private answered(line: string): void {
    const sp = line.indexOf(' ');
    const id = Number(line.slice(0, sp));
    const i = this.pending.findIndex((p) => p.id === id);
    if (i < 0) {
      this.log.warn({ event: 'announcer', line }, `vip announcer: unexpected answer ${JSON.stringify(line)}`);
      return;
    }
    const [p] = this.pending.splice(i, 1);
    const rest = line.slice(sp + 1);
    p.resolve(rest === 'ok' ? null : rest.replace(/^error /, ''));
  }

  private fail(why: string): void {
    for (const p of this.pending.splice(0)) p.resolve(why);
  }
}
