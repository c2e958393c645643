// The control plane's Prometheus registry: before every scrape it asks the data planes for their
// counts, so that the sum of tandem_requests_total after N proxied requests is N, not
// whatever the last once-a-second copy said.

import { Registry } from 'prom-client';

/** A Registry that runs `gather` (bounded by its own timeouts) before producing the text. */
export class GatheringRegistry extends Registry {
  private readonly gather: () => Promise<void>;

  constructor(gather: () => Promise<void>) {
    super();
    this.gather = gather;
  }

  override async metrics(): Promise<string> {
    await this.gather();
    return super.metrics();
  }
}
