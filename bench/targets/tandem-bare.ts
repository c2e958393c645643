// tandem with its features off: the same data plane as `tandem run`, started without
// request metrics (InstanceOptions.metrics = null) and without the admin API, on a config
// with no health checks and no outlier detection. Compared with the full `tandem run`
// target, it shows what health checks and metrics cost. `tandem run` always records
// metrics today, hence this launcher instead of a config switch.
//
//   node bench/targets/tandem-bare.ts CONFIG.yaml    # prints {"port":N}

import { Instance } from '../../src/main.ts';

const instance = await Instance.start({ file: process.argv[2], node: null, metrics: null, log: () => {} });
const address = instance.listeners()[0].address;
process.stdout.write(JSON.stringify({ port: Number(address.slice(address.lastIndexOf(':') + 1)) }) + '\n');
process.on('SIGTERM', () => {
  void instance.close(1000).then(() => process.exit(0));
});
