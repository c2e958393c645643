import type { IncomingMessage } from 'node:http';
import type { Backend } from '../pool/backend.ts';
import type { RouteRuntime } from './generation.ts';
import type { ForwardContext } from './headers.ts';

// An exchange as the rest of tandem sees it once it is over: what the metrics, the access
// log and the WebSocket relay report. forward.ts's ProxyRequest is one; tandem's own
// answers and upgrades make plain ones.

/** What is known of a finished request; metrics and the access log read it. */
export interface Exchange {
  /** null: the request could not be parsed (answered with a 4xx on the raw connection). */
  readonly req: IncomingMessage | null;
  readonly ctx: ForwardContext;
  /** null: no route matched. */
  readonly route: RouteRuntime | null;
  readonly backend: Backend | null;
  readonly status: number;
  /** performance.now() when the request arrived. */
  readonly start: number;
  /** Body bytes of the answer written to the client; after an upgrade, bytes from the backend to the client. */
  readonly bytes: number;
  /** Body bytes of the request sent on to the backend; after an upgrade, bytes from the client to the backend. */
  readonly received: number;
  readonly retries: number;
  readonly errorCode: string | null;
  /** Seconds from sending the request to the backend to its response head (absent or -1: no head came). */
  readonly upstreamSeconds?: number;
  /** The X-Request-Id the backend and the client were given. */
  readonly requestId: string;
  /** The trace id of a valid traceparent, else null. */
  readonly traceId: string | null;
  /** A WebSocket session, logged when it ends. */
  readonly upgrade: boolean;
}

/** Finished requests are reported here; the metrics and access log implement it. */
export interface RequestObserver {
  /** A request was answered: counted and logged. */
  finished(exchange: Exchange): void;
  /**
   * Not a request the metrics count as one: an upgrade (a WebSocket session, or the
   * refusal of one, counted by result), an answer on a listener a reload removed, or a
   * request that could not be parsed (`req` null); tandem's error answers among them are
   * counted by code.
   */
  logged(exchange: Exchange): void;
  /** A WebSocket upgrade the backend accepted (101): counted now, logged when the session ends. */
  switched(exchange: Exchange): void;
}
