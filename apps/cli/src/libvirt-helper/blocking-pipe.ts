/**
 * Blocking reads and writes on the pipes libvirt gives the helper's `-c` (QEMU → helper → libvirt_iohelper).
 *
 * Why not streams: a paused save has nothing to wait for but the next read and the next write, and the machine
 * is busy with QEMU, the helper and the iohelper at once, so every cycle the helper spends beside compressing
 * shows in the save time. process.stdin/stdout go through libuv, a stream per 64 KiB pipe read, a copy of each
 * output batch (an async write keeps its buffer) and an async iterator per chunk; measured on a 135 MB save
 * stream that was a third of the helper's main-thread time. A blocking read fills one 1 MiB buffer (one batch),
 * and a blocking write sends a batch straight from the encoder's buffer.
 *
 * The pipes are blocking unless somebody set O_NONBLOCK on them (libvirt does not; libuv does for pipes it opens,
 * which is why nothing here touches process.stdin or process.stdout first). EAGAIN is still handled: the call
 * waits a millisecond and retries (waitIfAgain), so a non-blocking pipe costs polling, never bytes.
 */
import { readSync, writeSync } from 'node:fs'

const nap = new Int32Array(new SharedArrayBuffer(4))

/**
 * After a read or write on a pipe threw: when it was EAGAIN (a non-blocking pipe with nothing to do yet), waits
 * `ms` and says true, to retry; any other error says false.
 */
export function waitIfAgain(e: unknown, ms = 1): boolean {
  if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return false
  Atomics.wait(nap, 0, 0, ms)
  return true
}

/** One read of up to `len` bytes into `buf` at `off`, blocking until some are there: 0 at the end. */
function readBlocking(fd: number, buf: Uint8Array, off: number, len: number): number {
  for (;;) {
    try {
      return readSync(fd, buf, off, len, null)
    } catch (e) {
      if (!waitIfAgain(e)) throw e
    }
  }
}

/**
 * Reads into `buf` from `off` on until it holds `atLeast` bytes (default: full) or the input ends: the bytes in
 * `buf` then. Each read takes whatever is there, up to the end of `buf`.
 */
export function fillBlocking(fd: number, buf: Uint8Array, off = 0, atLeast = buf.length): number {
  let n = off
  while (n < atLeast) {
    const got = readBlocking(fd, buf, n, buf.length - n)
    if (got === 0) break
    n += got
  }
  return n
}

/** Writes all of `data`, blocking while the reader is behind. */
export function writeBlocking(fd: number, data: Uint8Array): void {
  let off = 0
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off, data.length - off)
    } catch (e) {
      if (!waitIfAgain(e)) throw e
    }
  }
}

/**
 * Feeds the input of `fd` to `push` in reads that fill `buf` (its first `have` bytes are input already read, as
 * the sniffed head), until the end. `push` must be done with the buffer when it returns or its promise settles.
 */
export async function pumpBlocking(
  fd: number,
  buf: Uint8Array,
  have: number,
  push: (chunk: Uint8Array) => void | Promise<void>,
): Promise<void> {
  let n = have
  for (;;) {
    n = fillBlocking(fd, buf, n)
    if (n === 0) return
    const p = push(buf.subarray(0, n))
    if (p) await p
    if (n < buf.length) return
    n = 0
  }
}
