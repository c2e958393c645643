// What a peer store is started with.

import type { HaNodeConfig } from '../../../config/types.ts';
import type { Logger } from '../../../log.ts';

export interface PeerStoreOptions {
  /** This node's id; it must be in `nodes`. */
  readonly node: string;
  readonly nodes: readonly HaNodeConfig[];
  /** Shared secret of `ha.secret`; null only for a single node or tests (adverts then unauthenticated). */
  readonly secret: string | null;
  readonly leaseDuration: number;
  readonly renewEvery: number;
  /** How long a holder waits, in a planned handover, for the new holder to serve. */
  readonly handoverTimeout: number;
  /** Link-local multicast group for a second copy of every advert (see transport.ts); null: unicast only. */
  readonly multicastGroup?: string | null;
  /**
   * Awaited before the holder offers a key to a candidate that preempts it: the elector
   * winds down the VIP's connections first (bounded; see src/ha/departure.ts).
   */
  readonly beforeOffer?: (key: string) => Promise<void>;
  readonly log?: Logger;
}
