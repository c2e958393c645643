// tandem with its features off: the same control plane and data plane as `tandem run`,
// with the data plane in the same process (`--workers 0`) and `bare` set (no request
// counters, metrics, admin API or HA), on a config with no health checks and no outlier
// detection. Compared with the full `tandem run` target, it shows what the worker
// split, health checks and metrics cost.
//
//   node bench/targets/tandem-bare.ts CONFIG.yaml    # prints {"port":N}

import { ControlPlane } from '../../src/control/control-plane.ts';
import { overrideLogLevel } from '../../src/log.ts';

// stdout carries the one JSON line the bench reads; the log would only add noise on stderr.
overrideLogLevel('silent');

const plane = await ControlPlane.start({ file: process.argv[2], node: null, workers: 0, bare: true });
const address = plane.listeners()[0].address;
process.stdout.write(JSON.stringify({ port: Number(address.slice(address.lastIndexOf(':') + 1)) }) + '\n');
process.on('SIGTERM', () => {
  void plane.close(1000).then(() => process.exit(0));
});
