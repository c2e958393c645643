// The floor: the least a Node.js reverse proxy can do. node:http in front, one undici
// Pool.dispatch per request behind, headers passed through as node parsed them, no
// routing, balancing, health, metrics or header rewriting. Whatever this costs is what
// Node itself costs; a proxy with features can only approach it.
//
//   node bench/targets/undici-floor.ts http://127.0.0.1:PORT    # prints {"port":N}

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

const upstream = new Pool(process.argv[2], { connections: 128, pipelining: 1 });

/** One per request: undici's handler, writing straight into the client response. */
class Forward implements Dispatcher.DispatchHandler {
  readonly res: ServerResponse;
  controller: Dispatcher.DispatchController | null;

  constructor(res: ServerResponse) {
    this.res = res;
    this.controller = null;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(_controller: Dispatcher.DispatchController, status: number,
    headers: Record<string, string | string[] | undefined>): void {
    // Hop-by-hop headers belong to the upstream connection; node sets its own.
    delete headers.connection;
    delete headers['keep-alive'];
    delete headers['transfer-encoding'];
    this.res.writeHead(status, headers as Record<string, string | string[]>);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', resume.bind(this));
    }
  }

  onResponseEnd(): void {
    this.res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.res.headersSent || this.res.destroyed) this.res.destroy(err);
    else this.res.writeHead(502).end();
  }
}

const kForward = Symbol('forward');
type Res = ServerResponse & { [kForward]: Forward };

function resume(this: Forward): void {
  this.controller?.resume();
}

// A client that leaves mid-response (every load generator does at the end of a run)
// must free the upstream connection, or a paused one stays taken for good.
function onClose(this: Res): void {
  const c = this[kForward].controller;
  if (!this.writableFinished && c !== null && !c.aborted) c.abort(new Error('client went away'));
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  const forward = new Forward(res);
  (res as Res)[kForward] = forward;
  res.on('close', onClose);
  upstream.dispatch({ path: req.url ?? '/', method: req.method ?? 'GET', headers: req.rawHeaders, body: hasBody ? req : null }, forward);
}

const server = createServer(onRequest);
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
