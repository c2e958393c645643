// A client of one node's admin API, for tools that watch or steer a running pair from
// outside (`tandem drill`, the demo's relay, the `tandem status` family of commands). It speaks HTTP only and reads just the parts
// of GET /api/v1/status it needs, so the server side may change behind it.

/** A VIP as one node sees it. */
export interface NodeVip {
  readonly name: string;
  /** `10.0.0.100/24` as configured. */
  readonly address: string;
  /** This node's state for the VIP: MASTER, BACKUP, FAULT or STOP. */
  readonly state: string;
  /** The node this node believes holds the VIP. */
  readonly holder: string | null;
  readonly epoch: number;
  readonly priority: number;
  readonly leaseDuration: number;
}

/** The part of one node's status document a drill or relay needs. */
export interface NodeStatus {
  readonly node: string;
  readonly listeners: readonly { readonly name: string; readonly address: string; readonly bound: boolean }[];
  readonly pools: readonly { readonly name: string; readonly available: boolean }[];
  readonly vips: readonly NodeVip[];
}

export class AdminClient {
  readonly url: string;
  private readonly token: string | null;
  private readonly timeout: number;

  constructor(url: string, token: string | null = null, timeout = 2000) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.timeout = timeout;
  }

  /** GET /api/v1/status; rejects with a readable reason when the node cannot be read. */
  async status(): Promise<NodeStatus> {
    const res = await this.call('GET', '/api/v1/status');
    if (!res.ok) throw new Error(`${this.url}/api/v1/status answered ${res.status}${await detail(res)}`);
    const body = (await res.json()) as Partial<NodeStatus>;
    if (typeof body.node !== 'string' || !Array.isArray(body.vips) || !Array.isArray(body.listeners) || !Array.isArray(body.pools)) {
      throw new Error(`${this.url}/api/v1/status is not a tandem status document`);
    }
    return body as NodeStatus;
  }

  /** POST /api/v1/vips/:vip/release; resolves true when released, false when this node did not hold it. */
  async release(vip: string): Promise<boolean> {
    const res = await this.call('POST', `/api/v1/vips/${encodeURIComponent(vip)}/release`);
    if (res.status === 404) {
      await res.body?.cancel();
      return false;
    }
    if (!res.ok) throw new Error(`release of ${vip} at ${this.url} answered ${res.status}${await detail(res)}`);
    await res.body?.cancel();
    return true;
  }

  private call(method: string, path: string): Promise<Response> {
    // A release waits for the successor to serve: give it longer than a read.
    return this.send(method, path, method === 'POST' ? {} : undefined, method === 'POST' ? this.timeout * 5 : this.timeout);
  }

  /**
   * One call with the token; `body` goes as JSON (without a token the admin API takes
   * changes as nothing else: no form can send it). Rejects with an Error whose `code`
   * says why when no answer came (ECONNREFUSED, TimeoutError...).
   */
  async send(method: string, path: string, body?: unknown, timeoutMs: number = this.timeout): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token !== null && this.token !== '') headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const code = cause?.code ?? (err as Error).name;
      throw Object.assign(new Error(`${this.url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`), { code });
    }
  }
}

async function detail(res: Response): Promise<string> {
  const text = (await res.text().catch(() => '')).trim();
  return text === '' ? '' : `: ${text.slice(0, 200)}`;
}

/** The VIP's address without its prefix length. */
export function vipHost(address: string): string {
  return address.replace(/\/\d+$/, '');
}

/** The port of a listener address such as `0.0.0.0:8080` or `[::]:8443`. */
export function listenerPort(address: string): number {
  return Number(/:(\d+)$/.exec(address)?.[1] ?? NaN);
}
