// A bare node:http server with no proxy in it, forked by tests that compare tandem with
// what Node itself costs. It sends its port to the parent over IPC.
import { createServer } from 'node:http';

const server = createServer({ keepAliveTimeout: 120_000 }, (_req, res) => res.end('idle'));
server.listen(0, '127.0.0.1', () => process.send!((server.address() as { port: number }).port));
