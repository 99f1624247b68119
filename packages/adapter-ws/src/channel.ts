/**
 * ReliableChannel: two sequenced byte directions over a replaceable transport (one WebSocket at a time).
 *
 * Outbound: every message gets the next sequence number and stays in a bounded retransmit buffer until the peer
 * acks it; `canSend` is false while the unacked bytes reach `windowBytes` or the transport's buffered amount
 * reaches `highWaterBytes`. After a reconnect `attach(transport, peerWantsFrom)` drops what the peer already has and
 * retransmits the rest in order.
 *
 * Inbound: messages are delivered strictly in order; duplicates (seq below the next expected one, i.e. retransmits
 * after a resume) are dropped, a gap is a protocol error. An ack (= highest contiguous seq delivered) is sent every
 * `ackEveryBytes` or after `ackDelayMs`. If `deliver` returns false the consumer is full: acks are withheld (so the
 * peer's window closes) and `onInboundHold(true)` lets the owner pause the socket until `resumeInbound()`.
 */
import { decodeMessage, encodeMessage, KIND_DATA, KIND_END } from './frame.js'

export interface ChannelTransport {
  sendBinary(buf: Buffer, cb: (err?: Error) => void): void
  sendText(text: string): void
  readonly bufferedAmount: number
}

export interface ReliableChannelOptions {
  windowBytes: number
  highWaterBytes: number
  ackEveryBytes: number
  ackDelayMs: number
  deliver(payload: Buffer): boolean
  onInboundEnd(): void
  onWritable?(): void
  onAck?(seq: number): void
  onInboundHold?(held: boolean): void
}

export class ChannelError extends Error {
  override name = 'ChannelError'
}

interface Pending {
  seq: number
  msg: Buffer
}
const RELEASED: Pending = { seq: 0, msg: Buffer.alloc(0) }

export class ReliableChannel {
  private readonly o: ReliableChannelOptions
  private transport: ChannelTransport | null = null
  // outbound
  private nextSeq = 1
  private queue: Pending[] = []
  private head = 0
  private _unackedBytes = 0
  private _outEnded = false
  private _peerAcked = 0
  /** Payload bytes sent (first transmissions only). */
  bytesOut = 0
  /** Messages retransmitted after resumes. */
  retransmits = 0
  // inbound
  private _nextExpected = 1
  private lastAckSent = 0
  private sinceAck = 0
  private ackTimer: NodeJS.Timeout | null = null
  private _held = false
  private _inEnded = false
  /** Payload bytes delivered. */
  bytesIn = 0

  constructor(options: ReliableChannelOptions) {
    this.o = options
  }

  get attached(): boolean {
    return this.transport !== null
  }
  get unackedBytes(): number {
    return this._unackedBytes
  }
  get outEnded(): boolean {
    return this._outEnded
  }
  /** Sequence number of the END message once `end()` was called. */
  get endSeq(): number {
    return this._outEnded ? this.nextSeq - 1 : 0
  }
  /** Everything sent (END included) has been acked. */
  get outComplete(): boolean {
    return this._outEnded && this._peerAcked === this.nextSeq - 1
  }
  /** Lowest outbound sequence number still held for retransmission (= next seq when nothing is held). */
  get oldestHeld(): number {
    return this._peerAcked + 1
  }
  get nextOutSeq(): number {
    return this.nextSeq
  }
  get peerAcked(): number {
    return this._peerAcked
  }
  /** Next inbound sequence number wanted. */
  get nextExpected(): number {
    return this._nextExpected
  }
  get inEnded(): boolean {
    return this._inEnded
  }
  get held(): boolean {
    return this._held
  }

  get canSend(): boolean {
    return (
      this.transport !== null &&
      !this._outEnded &&
      this._unackedBytes < this.o.windowBytes &&
      this.transport.bufferedAmount < this.o.highWaterBytes
    )
  }

  /** Is `from` a position this side can resume its outbound direction at? */
  canResumeAt(from: number): boolean {
    return Number.isSafeInteger(from) && from >= this._peerAcked + 1 && from <= this.nextSeq
  }

  /** Starts using a (new) transport. `peerWantsFrom` is the first outbound seq the peer still needs. */
  attach(transport: ChannelTransport, peerWantsFrom: number): void {
    if (!this.canResumeAt(peerWantsFrom))
      throw new ChannelError(
        `cannot resume at sequence ${peerWantsFrom}: this side holds ${this._peerAcked + 1}–${this.nextSeq - 1}`,
      )
    this.transport = transport
    this.ackUpTo(peerWantsFrom - 1)
    for (let i = this.head; i < this.queue.length; i++) {
      const p = this.queue[i]!
      this.retransmits++
      transport.sendBinary(p.msg, this.sent)
    }
    this.lastAckSent = 0
    this.sendAck()
  }

  detach(): void {
    this.transport = null
    if (this.ackTimer) clearTimeout(this.ackTimer)
    this.ackTimer = null
  }

  private readonly sent = (err?: Error) => {
    if (!err) this.o.onWritable?.()
  }

  /** Queues payload parts as one data message (sent now if attached, else on the next attach). */
  send(parts: readonly Uint8Array[]): number {
    if (this._outEnded) throw new ChannelError('send after end')
    const seq = this.nextSeq++
    const msg = encodeMessage(KIND_DATA, seq, parts)
    this.push(seq, msg)
    this.bytesOut += msg.length - 8
    return seq
  }

  /** Queues the END of this direction. */
  end(): number {
    if (this._outEnded) return this.nextSeq - 1
    const seq = this.nextSeq++
    this._outEnded = true
    this.push(seq, encodeMessage(KIND_END, seq))
    return seq
  }

  private push(seq: number, msg: Buffer): void {
    this.queue.push({ seq, msg })
    this._unackedBytes += msg.length
    this.transport?.sendBinary(msg, this.sent)
  }

  /** The peer acked everything up to `seq`. */
  handleAck(seq: number): void {
    if (seq >= this.nextSeq) throw new ChannelError(`ack for ${seq} but only ${this.nextSeq - 1} was sent`)
    if (this.ackUpTo(seq)) this.o.onAck?.(seq)
    this.o.onWritable?.()
  }

  private ackUpTo(seq: number): boolean {
    if (seq <= this._peerAcked) return false
    while (this.head < this.queue.length && this.queue[this.head]!.seq <= seq) {
      this._unackedBytes -= this.queue[this.head]!.msg.length
      this.queue[this.head] = RELEASED // drop the reference now, compact the array later
      this.head++
    }
    if (this.head >= 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this._peerAcked = seq
    return true
  }

  /** One binary message from the peer. Throws ChannelError on a protocol violation. */
  handleBinary(buf: Buffer): void {
    const m = decodeMessage(buf)
    if (!m) throw new ChannelError('malformed data message header')
    if (m.seq < this._nextExpected) {
      this.scheduleAck()
      return // duplicate after a resume
    }
    if (m.seq > this._nextExpected)
      throw new ChannelError(`sequence gap: got ${m.seq}, expected ${this._nextExpected}`)
    if (this._inEnded) throw new ChannelError('data after end of stream')
    this._nextExpected++
    if (m.kind === KIND_END) {
      this._inEnded = true
      this.sendAck()
      this.o.onInboundEnd()
      return
    }
    this.bytesIn += m.payload.length
    this.sinceAck += buf.length
    const ok = this.o.deliver(m.payload)
    if (!ok && !this._held) {
      this._held = true
      this.o.onInboundHold?.(true)
    }
    if (this.sinceAck >= this.o.ackEveryBytes) this.sendAck()
    else this.scheduleAck()
  }

  /** The consumer drained: acks flow again. */
  resumeInbound(): void {
    if (!this._held) return
    this._held = false
    this.o.onInboundHold?.(false)
    this.sendAck()
  }

  private scheduleAck(): void {
    if (this.ackTimer || !this.transport) return
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null
      this.sendAck()
    }, this.o.ackDelayMs)
  }

  private sendAck(): void {
    if (!this.transport || this._held) return
    const seq = this._nextExpected - 1
    if (seq <= this.lastAckSent) return
    if (this.ackTimer) clearTimeout(this.ackTimer)
    this.ackTimer = null
    this.lastAckSent = seq
    this.sinceAck = 0
    this.transport.sendText(JSON.stringify({ type: 'ack', seq }))
  }

  /** Stops timers and drops buffers. */
  dispose(): void {
    this.detach()
    this.queue = []
    this.head = 0
    this._unackedBytes = 0
  }
}
