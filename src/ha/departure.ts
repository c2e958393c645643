// Whether this node told its data planes that a VIP is about to leave it, so that they
// wind down the connections on its address before a planned handover lets it go
// (src/dataplane/vacate.ts says why). The elector says "leaving" when it starts to hand
// the VIP over and "not leaving" once it holds it again or the VIP is off this host.

export class Departure {
  private leaving: boolean;
  private readonly tell: ((leaving: boolean) => Promise<void>) | undefined;

  constructor(tell: ((leaving: boolean) => Promise<void>) | undefined) {
    this.tell = tell;
    this.leaving = false;
  }

  /** Resolves once the data planes applied it (for "leaving": after their bounded wait). */
  set(leaving: boolean): Promise<void> {
    if (this.tell === undefined || leaving === this.leaving) return Promise.resolve();
    this.leaving = leaving;
    return this.tell(leaving);
  }
}
