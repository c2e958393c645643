// Whether this node told its data planes that a VIP is about to leave it, so that they
// wind down the connections on its address before a planned handover lets it go
// (src/dataplane/vacate.ts says why). The elector says "leaving" when it starts to hand
// the VIP over and "not leaving" once it holds it again or the VIP is off this host. A
// release it starts itself is patient: it waits for the connections to close after their
// next answer before it offers the lease; so is an offer to a successor that preempts
// (the store awaits `preempted` before it makes the offer). A successor that takes the
// VIP without an offer does not wait for this node: then idle connections close at once.
//
// Once the successor serves, clients send to it, but requests this node received just
// before are still being answered here, from the VIP's address: removed, the address
// takes those answers with it (the kernel has no route for them) and their clients wait
// until they time out. So the elector lingers before it removes the address, until those
// answers are out (bounded by the data planes' wait).

export class Departure {
  private leaving: boolean;
  private readonly tell: ((leaving: boolean, patient: boolean) => Promise<void>) | undefined;
  private readonly owed: (() => Promise<void>) | undefined;
  private readonly holding: () => boolean;
  private readonly offerTimeout: number;

  /**
   * `tell` winds connections down, `owed` waits for the answers still owed on the address;
   * `holding`: the elector holds the VIP; `offerTimeout`: how long an offer may go unanswered.
   */
  constructor(tell: ((leaving: boolean, patient: boolean) => Promise<void>) | undefined, owed: (() => Promise<void>) | undefined, holding: () => boolean, offerTimeout: number) {
    this.tell = tell;
    this.owed = owed;
    this.holding = holding;
    this.offerTimeout = offerTimeout;
    this.leaving = false;
  }

  /**
   * A candidate preempts: leave patiently, then the store offers the lease. Should the VIP
   * still be held once the offer could have run out (the successor never took it), stay.
   */
  async preempted(): Promise<void> {
    if (!this.holding()) return;
    await this.set(true, true);
    setTimeout(() => {
      if (this.holding()) void this.set(false);
    }, this.offerTimeout).unref();
  }

  /** The successor serves and the address is about to go: resolves once the answers owed on it are out (bounded). */
  linger(): Promise<void> {
    if (this.owed === undefined || !this.leaving) return Promise.resolve();
    return this.owed();
  }

  /** Resolves once the data planes applied it (when leaving patiently: after their bounded wait). */
  set(leaving: boolean, patient = false): Promise<void> {
    if (this.tell === undefined || leaving === this.leaving) return Promise.resolve();
    this.leaving = leaving;
    return this.tell(leaving, patient);
  }
}
