// The file node:cluster runs in each worker process (see src/cluster/primary.ts). It
// imports only the data plane, never the admin API or prom-client.

import { enableGcPacing } from '../dataplane/gc-pacer.ts';
import { runWorker } from './worker.ts';

enableGcPacing();
runWorker();
