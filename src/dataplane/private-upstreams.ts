import type { Socket } from 'node:net';
import type { Backend } from '../pool/backend.ts';
import { proxyHeader, type Endpoint } from '../pool/proxy-header.ts';
import type { Upstream } from '../pool/backend.ts';
import type { ForwardContext } from './headers.ts';
import type { ProxiedPeer } from './proxy-protocol.ts';

// Upstream connections that belong to one client connection: those to backends of pools
// that send the PROXY protocol. The header names one client, so a connection that carried
// it must never carry another client's request (HAProxy marks such connections private
// for the same reason). A client connection gets, per backend it reaches, a connection
// pool of its own, opened on its first request there, reused by its next ones (keep-alive,
// or the concurrent streams of an HTTP/2 session), and destroyed when the client
// connection closes. Pools without the PROXY protocol never come here.

export class PrivateUpstreams {
  private readonly source: Endpoint;
  private readonly destination: Endpoint;
  /** Its connections are the fast engine's (the client connection is). */
  private readonly fast: boolean;
  private readonly byBackend = new Map<Backend, Upstream>();

  /**
   * `client`: the client address tandem goes by (a trusted PROXY header's, or the peer's);
   * `proxied`: that header, whose ports and destination are passed on as HAProxy does.
   */
  constructor(socket: Socket, client: string, proxied: ProxiedPeer | null, fast: boolean) {
    this.fast = fast;
    [this.source, this.destination] = endpointsOf(socket, client, proxied);
    socket.once('close', () => this.close());
  }

  /** This client connection's own connections to `backend`. */
  to(backend: Backend): Upstream {
    let upstream = this.byBackend.get(backend);
    if (upstream === undefined) {
      upstream = backend.openPrivate(proxyHeader(backend.proxyVersion!, this.source, this.destination), this.fast);
      this.byBackend.set(backend, upstream);
    }
    return upstream;
  }

  private close(): void {
    for (const [backend, upstream] of this.byBackend) backend.dropPrivate(upstream);
    this.byBackend.clear();
  }
}

/** The client and the address it connected to, as the PROXY header tells them to backends. */
function endpointsOf(socket: Socket, client: string, proxied: ProxiedPeer | null): [Endpoint, Endpoint] {
  const named = proxied !== null && proxied.address !== null;
  const source = { address: client, port: named ? proxied.port ?? 0 : socket.remotePort ?? 0 };
  const destination = named && proxied.destination !== null
    ? { address: proxied.destination, port: proxied.destinationPort ?? 0 }
    : { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
  return [source, destination];
}

/** The PROXY header for a connection of its own to `backend` (an upgraded WebSocket session). */
export function proxyHeaderFor(ctx: ForwardContext, backend: Backend): Buffer {
  const [source, destination] = endpointsOf(ctx.socket!, ctx.clientAddress, ctx.proxied ?? null);
  return proxyHeader(backend.proxyVersion!, source, destination);
}

/** The client connection's own upstream to `backend`, made on first use. */
export function privateUpstream(ctx: ForwardContext, backend: Backend): Upstream {
  ctx.privateUpstreams ??= new PrivateUpstreams(ctx.socket!, ctx.clientAddress, ctx.proxied ?? null, ctx.fast === true);
  return ctx.privateUpstreams.to(backend);
}
