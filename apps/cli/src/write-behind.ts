/**
 * Write-behind for the decoder's file paths (`xbzrle -dc > FILE`, `xbzrle decode -o FILE`, the libvirt helper's
 * restore into QEMU's pipe): a verified batch is written on libuv's thread pool while this thread decodes the
 * next one. With a synchronous write the decoder waits for the kernel to copy each batch (into the page cache,
 * or until QEMU reads the pipe) before it decodes on: on the 372 MB `sparse` bench stream that wait was about a
 * tenth of `xbzrle -dc`'s time.
 *
 * The decoder runs in pull mode with `reuseOutput` (WriteBehindDecoder makes it so): it rebuilds batches in two
 * buffers in turn, so the batch being written is never the one being decoded. At most one write is in flight, so memory stays at two batches.
 */
import { write } from 'node:fs'
import type { DecoderOptions } from '@xbzrle/adapter-libvirt'
import { XbzrleDecoder } from '@xbzrle/adapter-libvirt/filter'
import type { OutputSink, SyncFilter } from './file-filter.js'

/** Writes all of `chunk` at the descriptor's position; a pipe someone made non-blocking is retried (EAGAIN). */
export function writeAllAsync(fd: number, chunk: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number): void =>
      write(fd, chunk, off, chunk.length - off, null, (err, n) => {
        if (err?.code === 'EAGAIN') setTimeout(step, 1, off)
        else if (err) reject(err)
        else if (off + n < chunk.length) step(off + n)
        else resolve()
      })
    step(0)
  })
}

/** An XbzrleDecoder fed by feedFilter, writing each verified batch to `sink` behind the decoding of the next. */
export class WriteBehindDecoder implements SyncFilter {
  /** Pull mode with `reuseOutput`: two output buffers in turn, the one being written is not decoded into. */
  readonly decoder: XbzrleDecoder
  /** The write in flight, if any. */
  private pending: Promise<void> | undefined

  constructor(
    private readonly sink: OutputSink,
    options: DecoderOptions = {},
  ) {
    this.decoder = new XbzrleDecoder(undefined, { ...options, reuseOutput: true })
  }

  push(chunk: Uint8Array): Promise<void> {
    this.decoder.push(chunk)
    return this.drain()
  }

  /** End of input; settled() writes what is left and checks that the stream was complete. */
  finish(): void {
    this.decoder.end()
  }

  async settled(): Promise<void> {
    await this.drain()
    await this.pending
    this.decoder.finish()
  }

  /** After a failure: the write in flight ends before the caller closes or removes the output. */
  async close(): Promise<void> {
    await this.pending?.catch(() => {})
  }

  private async drain(): Promise<void> {
    // nextOutput() decodes into the buffer that is not being written; the write of the batch before it must end
    // before the next call reuses that one.
    for (let out = this.decoder.nextOutput(); out; out = this.decoder.nextOutput()) {
      await this.pending
      const p = writeAllAsync(this.sink.fd, out)
      p.catch(() => {}) // a failure is reported where it is awaited (above, or settled/close)
      this.pending = p
    }
  }
}
