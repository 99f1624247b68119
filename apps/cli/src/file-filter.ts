/**
 * The path to a regular file of `xbzrle -c < IN > FILE` / `-dc`, `encode IN -o FILE` and the like: when the
 * output is a regular file (stdout, or an atomic `-o` output), the filter runs without a stream pipeline and its
 * output is written with a synchronous write as soon as it exists, so the encoder can hand out views of its frame
 * buffer and the decoder can rebuild every batch in the same buffer. A regular file as input is read with large
 * reads (encoder: into two alternating buffers, each consumed when push() returns); any other input (a pipe from
 * QEMU) as the stream it is. Nothing is copied into fresh memory that need not be: on a fresh buffer every byte
 * costs a page fault, which measured more than the copy itself.
 *
 * The same bytes as the stream path: batches close at their target size, or (input not a regular file, unless the
 * caller turns it off as the libvirt helper does) when the input pauses, as in the stream path; the decoder
 * releases a batch only after its CRC matched. Every read is awaited, so signals, the progress bar and the metrics
 * endpoint run between reads.
 */
import { closeSync, fstatSync, openSync, read, type Stats, statSync, writeSync } from 'node:fs'
import type { Readable } from 'node:stream'
import type { DecoderOptions, EncoderOptions } from '@xbzrle/adapter-libvirt'
import {
  DecodeStream,
  EncodeStream,
  IDLE_FLUSH_MS,
  type XbzrleDecoder,
  XbzrleEncoder,
} from '@xbzrle/adapter-libvirt/filter'
import { type AtomicOutput, createAtomicOutput, installSignalHandlers } from './atomic-output.js'
import { CliError, ExitCode } from './errors.js'
import { assertStdoutNotInput, openInput } from './io.js'
import { WriteBehindDecoder } from './write-behind.js'

/** Read size: large reads are most of the speed of a filter (fewer calls, fewer batches split by a read). */
export const FILE_READ_BYTES = 4 << 20

function isFile(fd: number): boolean {
  let st: Stats
  try {
    st = fstatSync(fd)
  } catch {
    return false
  }
  return st.isFile()
}

/** Whether `-o PATH` will be a regular file: one is there, or nothing (a directory fails later, as ever). */
function fileOrNothing(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT'
  }
}

/**
 * How the input is read when the output is a regular file (stdout, or an `-o` path that is a regular file or
 * does not exist yet): `fd` = a regular file's descriptor (given by name or on stdin), read with large reads;
 * `stream` = anything else (a pipe, as libvirt's save helper gets from QEMU), read as a stream. Undefined when
 * the output is not a regular file: the stream path handles pipes, sockets, terminals and devices.
 */
export function fileOutputSource(
  input: string | undefined,
  output: string | undefined,
): FileSource | undefined {
  if (output === undefined || output === '-' ? !isFile(1) : !fileOrNothing(output)) return undefined
  if (input === undefined || input === '-') return isFile(0) ? { fd: 0 } : 'stream'
  let fd: number
  try {
    fd = openSync(input, 'r')
  } catch {
    return undefined // the stream path reports a missing or unreadable file in its own words
  }
  if (isFile(fd)) return { fd }
  closeSync(fd)
  return 'stream'
}

/** How the file-to-file path reads its input (fileOutputSource). */
export type FileSource = { fd: number } | 'stream'

/** Where the file-to-file path writes: stdout, or the temporary file of an atomic `-o` output. */
export interface OutputSink {
  fd: number
}

/**
 * The encoder for what fileOutputSource found: on the file path (`source` set) an XbzrleEncoder that writes each
 * chunk to `sink` before it goes on, so the chunk can be a view of its buffer (no copy); else an EncodeStream.
 */
export function encoderFor(
  source: FileSource | undefined,
  options: EncoderOptions,
): { sink: OutputSink; encoder: XbzrleEncoder; stream: EncodeStream | undefined } {
  const sink: OutputSink = { fd: 1 }
  if (source === undefined) {
    const stream = new EncodeStream(options)
    return { sink, encoder: stream.encoder, stream }
  }
  const encoder = new XbzrleEncoder((c) => writeAll(sink, c), { ...options, chunkView: true })
  return { sink, encoder, stream: undefined }
}

/**
 * The decoder for what fileOutputSource found: on the file path an XbzrleDecoder whose verified batches are
 * written to `sink` behind the decoding of the next (WriteBehindDecoder: two output buffers serve them all), the
 * filter fileToFile drives; else a DecodeStream.
 */
export function decoderFor(
  source: FileSource | undefined,
  options: DecoderOptions,
): {
  sink: OutputSink
  decoder: XbzrleDecoder
  filter: WriteBehindDecoder | undefined
  stream: DecodeStream | undefined
} {
  const sink: OutputSink = { fd: 1 }
  if (source === undefined) {
    const stream = new DecodeStream(options)
    return { sink, decoder: stream.decoder, filter: undefined, stream }
  }
  const filter = new WriteBehindDecoder(sink, options)
  return { sink, decoder: filter.decoder, filter, stream: undefined }
}

/** Writes all of `chunk` to the sink (a regular file: a short write is unlikely, but allowed). */
export function writeAll(sink: OutputSink, chunk: Uint8Array): void {
  let off = 0
  while (off < chunk.length) off += writeSync(sink.fd, chunk, off, chunk.length - off)
}

/** One read at the file's position into `buf`: the bytes read (0 at the end). */
function readInto(fd: number, buf: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n)))
  })
}

/**
 * Reads `fd` to its end in FILE_READ_BYTES reads and hands each read to `push`. The next read is in flight
 * (on libuv's thread pool) while `push` works on the last one, so a file that is not in the page cache is read
 * while the filter computes. With `reuse` the reads alternate between two buffers (`push` must be done with a
 * buffer when it returns: the read after next goes into it); else each read gets a fresh one (for a consumer that
 * keeps what it was given until later input completes it, as the decoder's record queue does).
 */
export async function readFileInto(
  fd: number,
  push: (chunk: Uint8Array) => void | Promise<void>,
  reuse: boolean,
): Promise<void> {
  const pair = reuse ? [rawBytes(FILE_READ_BYTES), rawBytes(FILE_READ_BYTES)] : undefined
  let reads = 0
  const next = (): { buf: Uint8Array; n: Promise<number> } => {
    const buf = pair ? pair[reads++ & 1]! : rawBytes(FILE_READ_BYTES)
    const n = readInto(fd, buf)
    n.catch(() => {}) // its failure is reported when it is awaited, not as an unhandled rejection
    return { buf, n }
  }
  let pending = next()
  for (;;) {
    const { buf, n } = pending
    const got = await n
    if (got === 0) return
    pending = next()
    try {
      await push(buf.subarray(0, got))
    } catch (e) {
      // Let the read in flight finish before the caller closes its descriptor.
      await pending.n.catch(() => {})
      throw e
    }
  }
}

function rawBytes(n: number): Uint8Array {
  const b = Buffer.allocUnsafeSlow(n)
  return new Uint8Array(b.buffer, b.byteOffset, n)
}

/** What fileToFile drives: XbzrleEncoder, or the decoder writing behind (WriteBehindDecoder). */
export interface SyncFilter {
  /** A promise when the filter has work in flight to await before the next push. */
  push(chunk: Uint8Array): void | Promise<void>
  finish(): void
  /** The encoder's: closes the open batch (when the input pauses). */
  flush?(): void
  /** The encoder's: what to await before pushing more while batches wait for its compression pool. */
  paced?(): Promise<void> | undefined
  /** The encoder's: resolves once every record is out (after finish: the whole stream). */
  settled?(): Promise<void>
  close?(): Promise<void>
}

/** Pushes `chunk`; with a compression pool, returns a promise when too many batches wait for it. */
function pushPaced(filter: SyncFilter, chunk: Uint8Array): Promise<void> | undefined {
  return filter.push(chunk) ?? filter.paced?.()
}

/**
 * Feeds a stream's chunks to `filter`; with `filter.flush` (and `idleFlush`), the open batch is closed once the
 * input pauses for IDLE_FLUSH_MS (as EncodeStream does), so what came in so far reaches the file.
 */
async function pushStream(source: Readable, filter: SyncFilter, idleFlush: boolean): Promise<void> {
  let idle: NodeJS.Timeout | undefined
  let failed: unknown
  const flush = idleFlush ? filter.flush?.bind(filter) : undefined
  try {
    for await (const chunk of source) {
      if (failed !== undefined) throw failed
      const paced = pushPaced(filter, chunk as Uint8Array)
      if (paced) await paced
      if (!flush) continue
      if (idle) idle.refresh()
      else
        idle = setTimeout(() => {
          idle = undefined
          try {
            flush()
          } catch (e) {
            failed = e
          }
        }, IDLE_FLUSH_MS)
    }
    if (failed !== undefined) throw failed
  } finally {
    if (idle) clearTimeout(idle)
  }
}

/**
 * Runs `filter` over its whole input, then finishes it and waits until its output is out: a regular file's
 * descriptor is read with large reads (into two reused buffers with `reuse`), a stream chunk by chunk (closing the
 * open batch when it pauses, unless `idleFlush` is false). The caller closes the filter on failure.
 */
export async function feedFilter(
  input: number | Readable,
  filter: SyncFilter,
  o: { reuse: boolean; idleFlush?: boolean },
): Promise<void> {
  if (typeof input === 'number') await readFileInto(input, (c) => pushPaced(filter, c), o.reuse)
  else await pushStream(input, filter, o.idleFlush ?? true)
  filter.finish()
  await filter.settled?.()
}

/**
 * filterToOutput for a regular file out, stdout or `-o` (see file-filter.ts): the filter gets the input (a
 * regular file's descriptor: large reads, into reused buffers when `reuse`; else the stream) and writes its
 * output to `sink.fd` (stdout, or the atomic output's temporary file, set here before the first read); then it
 * finishes, `check` runs, and a named output is committed (or, on any error or signal, left as it was). Closes a
 * descriptor it was given (unless it is stdin).
 */
export async function fileToFile(
  input: string | undefined,
  output: string | undefined,
  source: FileSource,
  sink: OutputSink,
  filter: SyncFilter,
  reuse: boolean,
  startProgress: () => { stop(): void } | undefined,
  check: () => void,
): Promise<void> {
  const fd = source === 'stream' ? 0 : source.fd
  installSignalHandlers()
  let out: AtomicOutput | undefined
  let progress: { stop(): void } | undefined
  try {
    if (output === undefined || output === '-') assertStdoutNotInput(input)
    else {
      out = await createAtomicOutput(output, { sameAs: [input ?? '-'] })
      // fileToFileInput saw a regular file or nothing there; a device put there since gets no descriptor.
      if (out.fd === undefined) throw new CliError(`${output}: no longer a regular file`, ExitCode.IO)
      sink.fd = out.fd
    }
    progress = startProgress()
    try {
      await feedFilter(source === 'stream' ? openInput(input) : fd, filter, { reuse })
    } finally {
      progress?.stop()
    }
    check()
    await out?.commit()
  } catch (e) {
    await filter.close?.()
    await out?.abort()
    throw e
  } finally {
    if (fd !== 0) closeSync(fd)
  }
}
