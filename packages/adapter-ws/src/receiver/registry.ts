/**
 * The receiver's sessions by migration id, the outcomes of recently ended ones, and the memory they reserve. It is
 * the `ReceiverView` that admission decides on; sessions leave it through `release`.
 */
import type { EndedSessionView, LiveSessionView, ReceiverView } from './admission.js'

interface Ended extends EndedSessionView {
  timer: NodeJS.Timeout
}

export class SessionRegistry<
  S extends LiveSessionView & { readonly id: string; readonly memoryBytes: number },
> implements ReceiverView<S>
{
  private readonly live = new Map<string, S>()
  private readonly outcomes = new Map<string, Ended>()
  private reserved = 0
  /** Set by the receiver's close(): nothing is remembered any more. */
  closing = false

  /** @param graceMs how long an ended session's outcome stays available to a resume */
  constructor(private readonly graceMs: number) {}

  get sessions(): ReadonlyMap<string, S> {
    return this.live
  }
  get ended(): ReadonlyMap<string, EndedSessionView> {
    return this.outcomes
  }
  get memoryInUse(): number {
    return this.reserved
  }

  add(session: S): void {
    this.live.set(session.id, session)
    this.reserved += session.memoryBytes
    this.forget(session.id)
  }

  /**
   * The session ended. With an outcome it is remembered for a late resume (e.g. a sender whose final ack was
   * lost); without one (a session nobody ever learnt the secret of) every trace of the id goes.
   */
  release(session: S, outcome: Omit<EndedSessionView, 'secret' | 'legacy'> | undefined): void {
    if (this.live.get(session.id) !== session) return
    this.live.delete(session.id)
    this.reserved -= session.memoryBytes
    this.forget(session.id)
    if (!outcome || this.closing) return
    const timer = setTimeout(() => this.outcomes.delete(session.id), this.graceMs)
    timer.unref()
    this.outcomes.set(session.id, { ...outcome, secret: session.secret, legacy: session.legacy, timer })
  }

  private forget(id: string): void {
    const old = this.outcomes.get(id)
    if (old) clearTimeout(old.timer)
    this.outcomes.delete(id)
  }

  /** Forgets every ended session (the live ones are shut down by their owner). */
  clearEnded(): void {
    for (const id of [...this.outcomes.keys()]) this.forget(id)
  }
}
