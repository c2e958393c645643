// The file node:cluster runs in each worker process (see src/cluster/primary.ts). It
// imports only the data plane, never the admin API or prom-client.

import { runWorker } from './worker.ts';

runWorker();
