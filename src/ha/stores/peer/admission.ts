// Which datagrams reach the peer store: the right size, a valid MAC under the shared
// secret, a known sender, and a (boot, sequence) newer than that sender's last; every
// other one is dropped and counted by reason.

import type { PeerState } from './key-state.ts';
import { MAX_DATAGRAM, open, type Envelope } from './wire.ts';

/** Counters of received adverts; the admin API and tests read them. */
export interface PeerStoreStats {
  sent: number;
  sendErrors: number;
  /** Copies of adverts sent to the multicast group. */
  multicastSent: number;
  /** The second copy of an advert (unicast and multicast both arrived): dropped, harmless. */
  duplicates: number;
  received: number;
  accepted: number;
  badMac: number;
  unknownNode: number;
  replayed: number;
  malformed: number;
  /** Adverts from a boot whose process was seen to die. */
  fromDead: number;
}

/** The envelope and its sender when `msg` is admitted; null (counted in `stats`) when not. */
export function admitDatagram(key: Buffer, msg: Buffer, size: number, peers: ReadonlyMap<string, PeerState>, stats: PeerStoreStats): { envelope: Envelope; peer: PeerState } | null {
  stats.received++;
  if (size > MAX_DATAGRAM) {
    stats.malformed++;
    return null;
  }
  const opened = open(key, msg);
  if (!opened.ok) {
    stats[opened.reason]++;
    return null;
  }
  const envelope = opened.envelope;
  const peer = peers.get(envelope.n);
  if (peer === undefined) {
    stats.unknownNode++;
    return null;
  }
  const verdict = peer.guard.admit(envelope.b, envelope.s);
  if (verdict !== 'ok') {
    stats[verdict === 'duplicate' ? 'duplicates' : verdict === 'replay' ? 'replayed' : 'fromDead']++;
    return null;
  }
  stats.accepted++;
  return { envelope, peer };
}
