// The fast engine against node:http on the same raw client bytes: one tandem with a
// listener on each engine, the same request sent to both, and what each client and
// the backend saw compared. Where they differ, the fast engine is the one that is wrong.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { exchange as send, RecordingBackend } from '../hostile/support.ts';
import { parse, total } from '../helpers/prom.ts';

const servers: Server[] = [];
const procs: TandemProcess[] = [];

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A tandem with a listener on each engine, both to `backend`. */
async function both(backend: string, timeouts: Record<string, string> = {}): Promise<TandemProcess> {
  const listener = (name: string, engine: string) => ({ name, address: '127.0.0.1:0', engine, ...(Object.keys(timeouts).length > 0 ? { timeouts } : {}) });
  const t = await startTandem(config({
    listeners: [listener('fast', 'fast'), listener('node', 'node')],
    routes: [{ name: 'all', pool: 'p' }],
    pools: { p: { backends: [{ name: 'b', url: backend }] } },
  }));
  procs.push(t);
  return t;
}

interface Outcome { text: string; closed: boolean; ms: number }

/** Writes `steps` (bytes, or 'shut' to end the client's side) and reads until close or `ms`. */
async function exchange(address: string, steps: (string | 'shut')[], ms: number): Promise<Outcome> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket: Socket = connect(port, host);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const start = performance.now();
  let text = '';
  socket.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  const closed = new Promise<boolean>((resolve) => {
    socket.on('close', () => resolve(true));
    setTimeout(() => resolve(false), ms).unref();
  });
  for (const s of steps) {
    if (s === 'shut') socket.end();
    else socket.write(s);
  }
  const didClose = await closed;
  socket.destroy();
  return { text, closed: didClose, ms: performance.now() - start };
}

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

describe('fast engine against node:http', () => {
  test('a client that shuts its side in the middle of a request body is not left waiting on the backend', async () => {
    const url = await serve((req, res) => {
      req.resume();
      req.on('end', () => res.end('whole body'));
    });
    const t = await both(url);
    const steps = ['POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789', 'shut'];
    const [fast, node] = await Promise.all([exchange(t.listeners.get('fast')!, steps, 8000), exchange(t.listeners.get('node')!, steps, 8000)]);
    assert.equal(node.closed, true, 'node:http closes the connection');
    assert.equal(fast.closed, node.closed, 'the fast engine closes it too');
  });

  test('a Content-Length the client lists in Connection does not turn its body into chunked framing upstream', async () => {
    const backend = await RecordingBackend.start();
    try {
      const t = await both(backend.url);
      // Were the body sent as is under Transfer-Encoding: chunked, the backend would read
      // an empty body, then GET /smuggled as a request of its own.
      const body = '0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
      const bytes = `POST /up HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, content-length\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      for (const name of ['node', 'fast']) {
        backend.reset();
        const out = await send(t.listeners.get(name)!, bytes, { until: (text) => /\r\n\r\n/.test(text) && /POST \/up/.test(text), waitMs: 5000 });
        assert.deepEqual(out.statuses, [200], name);
        assert.deepEqual(backend.requests.map((r) => [r.method, r.url, r.body]), [['POST', '/up', body]], name);
      }
    } finally {
      await backend.close();
    }
  });

  test('idle backend connections close after the upstream keep-alive time on both engines, not only when next taken', async () => {
    // A backend that keeps idle connections for ever and sends no Keep-Alive hint: tandem's own time (4 s) decides.
    const server = createServer({ keepAliveTimeout: 0 }, (_req, res) => setTimeout(() => res.end('x'), 50));
    let open = 0;
    server.on('connection', (s: Socket) => {
      open++;
      s.on('close', () => open--);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
    const t = await both(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    for (const name of ['node', 'fast']) {
      const address = t.listeners.get(name)!;
      // Ten at once: ten backend connections, then all idle.
      await Promise.all(Array.from({ length: 10 }, () => send(address, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', { waitMs: 5000 })));
      assert.ok(open >= 2, `${name}: ${open} backend connections`);
      const deadline = Date.now() + 15_000;
      while (open > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(open, 0, `${name}: idle backend connections left open`);
    }
  });

  test('requests pipelined behind a slow one stop the connection being read, then are answered once it is done', async () => {
    const slow: ServerResponse[] = [];
    const url = await serve((req, res) => {
      if (req.url === '/slow') slow.push(res);
      else res.end('x');
    });
    const t = await both(url);
    const one = Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
    const block = Buffer.concat(Array.from({ length: 2000 }, () => one));
    for (const name of ['node', 'fast']) {
      const [host, port] = [t.listeners.get(name)!.split(':')[0], Number(t.listeners.get(name)!.split(':')[1])];
      const s = connect(port, host);
      s.on('error', () => {});
      await once(s, 'connect');
      let answers = 0;
      s.on('data', (d: Buffer) => { answers += d.toString('latin1').split('HTTP/1.1 200').length - 1; });
      s.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\n');
      // Up to 40 MB of pipelined requests, until the proxy stops taking them for a second.
      let sent = 0;
      const start = Date.now();
      while (sent < 40e6 && Date.now() - start < 20_000) {
        sent += block.length;
        if (!s.write(block)) {
          const drained = await Promise.race([once(s, 'drain').then(() => true), new Promise((r) => setTimeout(r, 1000, false))]);
          if (!drained) break;
        }
      }
      // The kernel's buffers take a few MB either way; a proxy that reads on takes all 40.
      assert.ok(sent < 20e6, `${name}: ${(sent / 1e6).toFixed(1)} MB of pipelined requests read while one was in flight`);
      const deadline = Date.now() + 20_000;
      while (slow.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      slow.shift()!.end('slow');
      while (answers < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(answers >= 1000, `${name}: ${answers} answers after the slow one ended`);
      s.destroy();
    }
  });
  test('a connection that has sent nothing is closed when a reload removes its listener, on both engines (nginx counts it idle; node:http does not)', async () => {
    const backend = await serve((_req, res) => res.end('ok'));
    // Headers and shutdown timeouts far past the wait below: only closing the idle connections of the removed listener can close these.
    const t = await startTandem(config({
      shutdownTimeout: '60s',
      listeners: ['fast', 'node'].map((engine) => ({ name: engine, address: '127.0.0.1:0', engine, timeouts: { headers: '60s' } })),
      routes: [{ name: 'all', pool: 'p' }],
      pools: { p: { backends: [{ name: 'b', url: backend }] } },
    }));
    procs.push(t);
    const sockets = await Promise.all(['fast', 'node'].map(async (name) => {
      const [host, port] = t.listeners.get(name)!.split(':');
      const s = connect(Number(port), host);
      s.on('error', () => {});
      await once(s, 'connect');
      return { name, closed: once(s, 'close').then(() => true) };
    }));
    // Accepted by tandem before the reload (the kernel's handshake comes first): a connection
    // still in the listen queue is not one of the listener's yet.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const series = parse(await (await fetch(`${t.admin}/metrics`)).text());
      if (['fast', 'node'].every((listener) => total(series, 'tandem_listener_connections', { listener }) >= 1)) break;
      assert.ok(Date.now() < deadline, 'tandem counted the two connections');
      await new Promise((r) => setTimeout(r, 100));
    }
    const rest = config({
      shutdownTimeout: '60s',
      listeners: [{ name: 'other', address: '127.0.0.1:0' }],
      routes: [{ name: 'all', pool: 'p' }],
      pools: { p: { backends: [{ name: 'b', url: backend }] } },
    });
    assert.equal(await t.reload(rest), 'reloaded');
    for (const { name, closed } of sockets) {
      const within = await Promise.race([closed, new Promise<boolean>((r) => setTimeout(r, 20_000, false).unref())]);
      assert.ok(within, `${name}: a connection with nothing sent stayed open after its listener was removed`);
    }
  });
});
