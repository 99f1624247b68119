import { Transform, type TransformCallback } from 'node:stream'
import { monotonicNs } from '@xbzrle/protocol/stream'
import { type DecoderOptions, XbzrleDecoder } from './decoder.js'
import { DrainMeter, inFlightBudget, MIN_IN_FLIGHT } from './drain.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'

// The `@xbzrle/adapter-libvirt/filter` entry (zod-free, for the CLI's fast start) also hands out the filters.
export { XbzrleDecoder, XbzrleEncoder }

/** Read/write size for files and pipes: big I/O is most of the speed of a filter. */
export const IO_CHUNK = 1 << 20

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e))
}

/** How long the input may pause before the open batch is closed and sent (see EncodeStream). */
export const IDLE_FLUSH_MS = 2
/** Input queued ahead of the encoder: one pipe read. More would be bytes QEMU counts as sent while they wait. */
const INPUT_QUEUE = MIN_IN_FLIGHT
/** How often a held input re-checks the backlog (ms). */
const HOLD_POLL_MS = 1
/** Raw bytes an open batch gathers before it is closed early for an idle output (fewer: per-batch overhead). */
const MIN_EARLY_BATCH = 16 * 1024

export interface EncodeStreamOptions extends EncoderOptions {
  /**
   * 'live' (default): the shallow, time-bounded pipeline below, for a migration whose guest runs while it is sent.
   * 'bulk': for a stream nobody waits on piece by piece, such as a save or dump of a paused guest into libvirt's
   * image pipe: batches close only at their target size and at the end, input is taken as fast as the stream's
   * own backpressure allows, and the output depends on the input alone, not on timing (with a fixed second
   * stage: `compression: 'auto'` still chooses per batch from measured times). (The live rules close a
   * batch whenever the output is idle; into a fast pipe that made every 64 KiB read a batch of its own.)
   */
  pacing?: 'live' | 'bulk'
}

/**
 * A Transform that encodes a QEMU migration stream with a shallow, time-bounded pipeline. QEMU decides when to
 * stop the guest from the rate at which its pipe accepts bytes (docs/live-migration-downtime), so the encoder
 * takes input only as fast as its output drains:
 * - the output may hold at most IN_FLIGHT_MS of what it drains (DrainMeter; 1 MiB while the link keeps up); beyond
 *   that the Transform callback is held, so no more input is read, until the consumer takes bytes;
 * - the open batch is closed as soon as the output is idle (after MIN_EARLY_BATCH), when it holds a budget's worth
 *   of input, when the input pauses for IDLE_FLUSH_MS, and at every pass boundary (the encoder does that);
 * - with `compression: 'auto'` the drain rate and the encoder's busy time feed the per-batch codec choice.
 */
export class EncodeStream extends Transform {
  readonly encoder: XbzrleEncoder
  /** pacing 'bulk': no early batch close, no time budget (EncodeStreamOptions). */
  private readonly bulk: boolean
  readonly drain = new DrainMeter()
  private idle: NodeJS.Timeout | undefined
  /** The Transform callback, held while the output is over its in-flight budget. */
  private held: TransformCallback | undefined
  private poll: NodeJS.Timeout | undefined
  private sinceFlush = 0
  /** Where the output goes: its write queue is part of the backlog (a 1 MiB batch is one write). */
  private dest: { readonly writableLength: number } | undefined

  constructor(
    options: EncodeStreamOptions = {},
    private readonly now: () => number = monotonicNs,
  ) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: INPUT_QUEUE })
    const { pacing, ...encoderOptions } = options
    this.bulk = pacing === 'bulk'
    this.encoder = new XbzrleEncoder((c) => {
      this.sinceFlush = 0
      this.drain.produce(c.length)
      this.push(c)
    }, encoderOptions)
  }

  /**
   * Counts `dest`'s write queue (stdout, a socket, a send queue) as backlog too: a pipe hands it whole chunks, so
   * the backlog shows there first. Call it with the stream this one is piped into.
   */
  drainsInto(dest: { readonly writableLength: number }): this {
    this.dest = dest
    return this
  }

  /** Output bytes produced and not yet taken by the consumer. */
  get backlog(): number {
    return this.readableLength + (this.dest?.writableLength ?? 0)
  }

  /** Bytes the output may hold now. */
  get budget(): number {
    return inFlightBudget(this.drain.rate, IO_CHUNK)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.bulk) {
      try {
        this.encoder.push(chunk)
      } catch (e) {
        cb(toError(e))
        return
      }
      this.paced(cb)
      return
    }
    try {
      const t0 = this.now()
      this.encoder.push(chunk)
      this.sinceFlush += chunk.length
      const idleOutput = this.backlog === 0
      if ((idleOutput && this.sinceFlush >= MIN_EARLY_BATCH) || this.sinceFlush >= this.budget)
        this.encoder.flush()
      const t1 = this.now()
      this.measure(t1)
      this.encoder.adaptive?.noteBusy(t1 - t0)
      this.armIdleFlush()
      if (this.backlog > this.budget) this.hold(cb)
      else this.paced(cb)
    } catch (e) {
      cb(toError(e))
    }
  }

  /** With a compression pool: takes more input only once few enough batches wait for it (bounded memory). */
  private paced(cb: TransformCallback): void {
    const wait = this.encoder.paced()
    if (!wait) cb()
    else
      wait.then(
        () => cb(),
        (e: unknown) => cb(toError(e)),
      )
  }

  private measure(t: number): void {
    this.drain.sample(t, this.backlog)
    this.encoder.adaptive?.setDrainRate(this.drain.rate)
  }

  override _read(size: number): void {
    this.release()
    super._read(size)
  }

  /**
   * The consumer takes bytes through read(); the held input resumes once the output is within budget. (Not only
   * in _read: Readable calls that once and then waits for a push, which a held callback would never bring.)
   */
  override read(size?: number): ReturnType<Transform['read']> {
    const r = super.read(size)
    if (this.held) this.release()
    return r
  }

  /**
   * Holds the input until the backlog is within budget. The destination's queue drains without telling this
   * stream (no read() when its write() had not returned false), so a short poll re-checks as well.
   */
  private hold(cb: TransformCallback): void {
    this.held = cb
    this.poll ??= setInterval(() => this.release(), HOLD_POLL_MS)
  }

  private release(): void {
    this.measure(this.now())
    const cb = this.held
    if (cb && this.backlog <= this.budget) {
      this.held = undefined
      this.stopPoll()
      cb()
    }
  }

  private stopPoll(): void {
    if (this.poll) clearInterval(this.poll)
    this.poll = undefined
  }

  private armIdleFlush(): void {
    if (this.idle) this.idle.refresh()
    else {
      this.idle = setTimeout(() => {
        this.idle = undefined
        try {
          this.encoder.flush()
          this.sinceFlush = 0
        } catch (e) {
          this.destroy(toError(e))
        }
      }, IDLE_FLUSH_MS)
    }
  }

  private disarm(): void {
    if (this.idle) clearTimeout(this.idle)
    this.idle = undefined
  }

  override _flush(cb: TransformCallback): void {
    this.disarm()
    try {
      this.encoder.finish()
    } catch (e) {
      cb(toError(e))
      return
    }
    // Batches still on the compression pool come out (pushed) before the stream ends.
    this.encoder.settled().then(
      () => cb(),
      (e: unknown) => cb(toError(e)),
    )
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.disarm()
    this.stopPoll()
    this.held = undefined
    void this.encoder.close()
    cb(err)
  }
}

/**
 * A Transform that decodes an xbzrle stream back into the original bytes, verified batch by batch, with
 * backpressure inside an input chunk: it decodes one batch, pushes it, and when the readable side is full it
 * waits for the consumer to read before decoding the next one (the Transform callback is held meanwhile, so no
 * more input is taken either). A chunk of 4-byte 'same' frames expands a thousandfold; memory stays at the cache
 * plus about two batches (≤ 4 MiB each) plus the readable buffer, whatever the amplification.
 */
export class DecodeStream extends Transform {
  readonly decoder: XbzrleDecoder
  /** Set while waiting for the consumer: continues decoding the current chunk. */
  private pending: (() => void) | undefined
  /** A verified batch decoded ahead, waiting for room on the readable side. */
  private held: Uint8Array | undefined

  constructor(options: DecoderOptions = {}) {
    super({ readableHighWaterMark: IO_CHUNK, writableHighWaterMark: IO_CHUNK })
    this.decoder = new XbzrleDecoder(undefined, options)
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.decoder.push(chunk)
    } catch (e) {
      cb(toError(e))
      return
    }
    this.pump(cb, () => cb())
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.decoder.end()
    } catch (e) {
      cb(toError(e))
      return
    }
    this.pump(cb, () => {
      try {
        this.decoder.finish()
        cb()
      } catch (e) {
        cb(toError(e))
      }
    })
  }

  /**
   * Decodes and pushes batches until the input is used up (then `done`), pausing while the consumer is behind.
   * When the readable side is full it decodes one batch ahead and holds it: if there is none, the chunk is done
   * and the Transform's own backpressure takes over; if there is one, `_read` pushes it when the consumer asks.
   */
  private pump(cb: TransformCallback, done: () => void): void {
    for (;;) {
      if (this.destroyed) return
      let out: Uint8Array | undefined
      try {
        out = this.held ?? this.decoder.nextOutput()
        this.held = undefined
      } catch (e) {
        cb(toError(e))
        return
      }
      if (out === undefined) {
        done()
        return
      }
      if (!this.push(out)) {
        try {
          this.held = this.decoder.nextOutput()
        } catch (e) {
          cb(toError(e))
          return
        }
        if (this.held === undefined) {
          done()
          return
        }
        this.pending = () => this.pump(cb, done)
        return
      }
    }
  }

  override _read(size: number): void {
    const r = this.pending
    if (r) {
      this.pending = undefined
      r()
    } else super._read(size)
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.pending = undefined
    this.held = undefined
    cb(err)
  }
}
