// The file node:cluster runs in each worker process: one data plane, driven over IPC
// by the control plane in the parent. It imports only the data plane, never the admin
// API, prom-client or the YAML parser.

import cluster from 'node:cluster';
import { parentEnd } from '../channel/ipc.ts';
import { log } from '../log.ts';
import { DataPlaneAgent } from './agent.ts';
import { enableGcPacing } from './gc-pacer.ts';

// Every line this process writes carries `worker` (src/log.ts adds it in a worker).
enableGcPacing();
const agent = new DataPlaneAgent(parentEnd(log), log);

// Signals. `systemctl stop` (KillMode=control-group, the default), Ctrl-C, a terminal
// hang-up and `docker stop` under an init that forwards to the group signal every
// process, workers included. A worker that stopped on its own would stop accepting
// while the control plane is still handing the VIPs over (up to lease + hookTimeout),
// and connections would be refused. So while the control plane is there, workers
// ignore SIGTERM, SIGINT and SIGHUP and wait for its `stop`, which comes after the VIPs
// are released. KillMode=mixed is not needed (it would SIGTERM only the primary, which
// does the same), and systemd's final SIGKILL after TimeoutStopSec still ends
// everything. To stop one worker, SIGKILL it: the control plane starts a replacement.
const onSignal = () => {
  if (!process.connected) void agent.stop(null, 0);
};
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);
process.on('SIGHUP', onSignal);
// SIGUSR1 reopens the access log (the primary tells every worker, and `systemctl kill
// --signal=USR1` reaches each one itself). A listener must be there in any case: node's
// default for SIGUSR1 is to open the inspector on port 9229.
process.on('SIGUSR1', () => void agent.reopenLogs().then((error) => {
  if (error !== null) log.error({ event: 'access-log-reopen', err: error }, `SIGUSR1: ${error}`);
}));
// The control plane is gone: nobody will check health or replace us, and nobody will
// send `stop`. Finish the requests in flight and exit. node:cluster would exit at once
// on an unasked disconnect, cutting those requests, unless exitedAfterDisconnect is set.
if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true;
process.on('disconnect', () => void agent.stop(null, 0));
// Messages sent before the agent listened would have been dropped: ask for `start` now.
agent.hello();
