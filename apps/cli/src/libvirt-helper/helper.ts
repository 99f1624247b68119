/**
 * Helper mode: `xbzrle --libvirt-helper=lzop [--helper-conf=F] [--helper-wrapper=W] ARGS...`, what the installed
 * `lzop` (or `zstd`) wrapper runs. libvirt calls its compressor as `PROG -c` (save/dump) and
 * `PROG -dc --ignore-warn` (restore, lzop) / `PROG -dc` (zstd).
 *
 * - `-c` with a QEMU migration stream (QEVM) on stdin: encode it into an xbzrle stream.
 * - `-dc` with an xbzrle stream on stdin: decode it.
 * - anything else (an image saved with the real lzop, a tarball, `lzop -V`, file arguments...): run the real
 *   program with the same arguments, the bytes already sniffed first and then the rest of stdin; its stdout,
 *   stderr and exit status are passed through. So every image saved before the switch still restores, and other
 *   users of a diverted /usr/bin/lzop get real lzop.
 */
import { fstatSync, readFileSync, readSync, realpathSync, writeSync } from 'node:fs'
import type { Readable } from 'node:stream'
import { Readable as ReadableStream } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { EncoderOptions } from '@xbzrle/adapter-libvirt'
import { DecodeStream, EncodeStream, XbzrleEncoder } from '@xbzrle/adapter-libvirt/filter'
import { DEFAULT_BATCH_BYTES, isXbzrleStream } from '@xbzrle/protocol/stream'
import { classify, ExitCode } from '../errors.js'
import { encoderFor, feedFilter, fileOutputSource } from '../file-filter.js'
import { openInput, stdoutIsPipe } from '../io.js'
import { WriteBehindDecoder } from '../write-behind.js'
import { fillBlocking, pumpBlocking, waitIfAgain, writeBlocking } from './blocking-pipe.js'
import { encoderOptionsOf, HelperConfigError, readHelperConfig } from './config-file.js'
import { findRealProgram, HELPER_PROGRAMS, type HelperProgram } from './real-program.js'

export const HELPER_FLAG = '--libvirt-helper'
/** Set in the real program's environment: a helper that sees it was started by itself (a lookup loop). */
export const LOOP_GUARD_ENV = 'XBZRLE_HELPER_ACTIVE'
const SNIFF_BYTES = 16

export interface HelperInvocation {
  program: HelperProgram
  conf?: string
  wrapper?: string
  args: string[]
}

/** Splits `--libvirt-helper=NAME [--helper-conf=F] [--helper-wrapper=W] ARGS` (undefined: not helper mode). */
export function parseHelperArgv(argv: string[]): HelperInvocation | undefined {
  const first = argv[0]
  if (first === undefined || !(first === HELPER_FLAG || first.startsWith(`${HELPER_FLAG}=`))) return undefined
  let i = 1
  let program: string | undefined
  if (first === HELPER_FLAG) program = argv[i++]
  else program = first.slice(HELPER_FLAG.length + 1)
  const inv: HelperInvocation = { program: program as HelperProgram, args: [] }
  for (; i < argv.length; i++) {
    const a = argv[i]!
    if (a.startsWith('--helper-conf=')) inv.conf = a.slice('--helper-conf='.length)
    else if (a.startsWith('--helper-wrapper=')) inv.wrapper = a.slice('--helper-wrapper='.length)
    else break
  }
  inv.args = argv.slice(i)
  return inv
}

/** What libvirt asks for: compress stdin→stdout, decompress stdin→stdout, or something we do not handle. */
export function classifyArgs(args: string[]): 'compress' | 'decompress' | 'other' {
  const letters = new Set<string>()
  for (const a of args) {
    if (a === '--ignore-warn' || a === '--quiet') continue
    if (a === '--stdout') letters.add('c')
    else if (a === '--decompress') letters.add('d')
    else if (/^-[a-zA-Z0-9]+$/.test(a)) for (const ch of a.slice(1)) letters.add(ch)
    else return 'other' // file operands, '-', other long options
  }
  for (const ch of letters) if (!/^[cdqf1-9]$/.test(ch)) return 'other'
  if (!letters.has('c')) return 'other'
  return letters.has('d') ? 'decompress' : 'compress'
}

/** Entry point for index.ts: undefined when argv is not helper mode. */
export function runHelper(argv: string[]): Promise<number> | undefined {
  const inv = parseHelperArgv(argv)
  if (!inv) return undefined
  return helperMain(inv)
}

function fail(program: string, e: unknown): number {
  const c = e instanceof HelperConfigError ? { message: e.message, exitCode: ExitCode.USAGE } : classify(e)
  process.stderr.write(`xbzrle (${program} helper): ${c.message}\n`)
  return c.exitCode
}

export async function helperMain(inv: HelperInvocation): Promise<number> {
  const name = inv.program
  if (!HELPER_PROGRAMS.includes(name)) {
    process.stderr.write(`xbzrle: --libvirt-helper must be one of ${HELPER_PROGRAMS.join(', ')}\n`)
    return ExitCode.USAGE
  }
  if (process.env[LOOP_GUARD_ENV]) {
    process.stderr.write(
      `xbzrle (${name} helper): the real ${name} resolved to the helper again (${process.env[LOOP_GUARD_ENV]}); set real_${name} in the helper config\n`,
    )
    return ExitCode.ENVIRONMENT
  }
  try {
    const { config } = await readHelperConfig(inv.conf)
    const real = () => {
      const explicit = name === 'lzop' ? config.real_lzop : config.real_zstd
      const self = process.argv[1] ? [process.argv[1]] : []
      const r = findRealProgram(name, { wrapper: inv.wrapper, self, explicit })
      if (!r.found) throw new HelperConfigError(r.why)
      return r.found.path
    }
    const kind = classifyArgs(inv.args)
    if (kind === 'other') return await runReal(real(), name, inv.args, undefined)
    const head = await sniffStdin()
    if (kind === 'compress') {
      const isQemu = head.bytes.length >= 4 && head.bytes.subarray(0, 4).toString('latin1') === 'QEVM'
      if (!isQemu || config.encode === false) return await runReal(real(), name, inv.args, head)
      // QEVM was checked above: the header says so even when the pages are copied unparsed
      const options = { source: 'qemu' as const, ...encoderOptionsOf(config) }
      if (head.pipe) await encodePipe(options, head.pipe)
      else await encodeToOutput(head, options)
      return ExitCode.OK
    }
    if (!isXbzrleStream(head.bytes)) return await runReal(real(), name, inv.args, head)
    try {
      if (!head.consumed) await decodeFile()
      else await pipeline(head.rest(), new DecodeStream({}), process.stdout)
    } catch (e) {
      if (stdoutIsPipe() && parentIsLibvirt()) poisonStdout()
      throw e
    }
    return ExitCode.OK
  } catch (e) {
    return fail(name, e)
  }
}

/**
 * `-c`: libvirt pauses the guest before it saves or dumps it, so nothing waits on the image piece by piece: the
 * encoder runs with bulk pacing (batches close at their target size, EncodeStreamOptions), not with the live
 * rules, which close a batch whenever the output is idle. libvirt 9 gives us a pipe into libvirt_iohelper, which
 * is nearly always idle: every 64 KiB read became a batch of its own, which cost 12% of image size and a
 * second-stage call per read. A regular file on stdout (the helper run by hand, other callers) takes the file path
 * of `xbzrle -c` (file-filter.ts) without its idle flush: the same batches, written from the encoder's buffer
 * without a copy.
 */
async function encodeToOutput(head: Sniffed, options: EncoderOptions): Promise<void> {
  const source = fileOutputSource(undefined, undefined)
  if (source === undefined) {
    await pipeline(head.rest(), new EncodeStream({ ...options, pacing: 'bulk' }), process.stdout)
    return
  }
  const { encoder } = encoderFor(source, options)
  try {
    const input = head.consumed || source === 'stream' ? head.rest() : source.fd
    await feedFilter(input, encoder, { reuse: true, idleFlush: false })
  } catch (e) {
    await encoder.close()
    throw e
  }
}

/**
 * `-c` with a pipe on stdin, as libvirt runs it: blocking reads of whole batches and blocking writes of each
 * record from the encoder's buffer (blocking-pipe.ts), batches closed at their size only (bulk pacing, as on
 * encodeToOutput's paths; with pages copied unparsed, the default, the very same bytes).
 *
 * Like lzop, which writes a block once it has read it whole, the output may lag the input by one read (1 MiB)
 * and the batches on the compression worker: a batch the worker finishes while the next read waits for input
 * goes out when that read returns or the input ends. QEMU never waits for the compressor's output.
 */
async function encodePipe(options: EncoderOptions, pipe: { buf: Uint8Array; have: number }): Promise<void> {
  const encoder = new XbzrleEncoder((c) => writeBlocking(1, c), { ...options, chunkView: true })
  // The compression workers boot (about 0.1 s each on a small machine) while this thread encodes the first
  // batches; those are compressed here, to the same bytes.
  void encoder.startThreads()
  try {
    await pumpBlocking(0, pipe.buf, pipe.have, (c) => {
      encoder.push(c)
      // A loop turn before the next blocking read lets out the batches the pool has finished by now.
      return encoder.paced() ?? new Promise<void>((r) => setImmediate(r))
    })
    encoder.finish()
    await encoder.settled()
  } catch (e) {
    await encoder.close()
    throw e
  }
}

/**
 * `-dc` with a regular file on stdin, as libvirt restores (the image fd, after libvirt's header): large reads of
 * the file, each batch decoded once its CRC matched and written to QEMU's pipe behind the decoding of the next
 * (write-behind.ts), as `xbzrle -dc` does into a file: QEMU loads one batch while the next is decoded.
 */
async function decodeFile(): Promise<void> {
  await feedFilter(0, new WriteBehindDecoder({ fd: 1 }), { reuse: false })
}

function parentIsLibvirt(): boolean {
  try {
    return /^(libvirtd|virtqemud)$/.test(readFileSync(`/proc/${process.ppid}/comm`, 'utf8').trim())
  } catch {
    return false
  }
}

/**
 * libvirt 9.0 waits for QEMU to finish loading before it looks at the decompressor, and QEMU never sees the end
 * of its input when the decompressor dies: `virsh restore` would hang (it does with the real lzop and a file it
 * cannot read). After a failed decode into libvirt's pipe, the helper therefore sends bytes no QEMU stream can
 * continue with (0xff: no valid section type, RAM flags or page header), so QEMU fails the load at once and the
 * restore ends with an error instead of a hang. Only for a pipe whose reader libvirt started (parent libvirtd).
 */
function poisonStdout(): void {
  // Creating process.stdout makes the pipe non-blocking (decodeFile writes it blocking): a QEMU that stopped
  // reading then costs the bounded retries below, not a hang.
  if (process.stdout.fd !== 1) return
  const junk = Buffer.alloc(1 << 16, 0xff)
  let left = 16 // up to 1 MiB: more than any single record QEMU may be in the middle of
  for (let tries = 0; left > 0 && tries < 2000; tries++) {
    try {
      writeSync(1, junk)
      left--
    } catch (e) {
      if (!waitIfAgain(e, 5)) return // EPIPE: QEMU already gave up
    }
  }
}

interface Sniffed {
  bytes: Buffer
  /** True when the bytes were read off stdin (they must be fed to whoever reads next). */
  consumed: boolean
  /** stdin from the start: the sniffed bytes, then the rest. */
  rest: () => Readable
  /** A pipe on stdin, sniffed with a blocking read: its first `have` bytes are in `buf` (PIPE_READ_BYTES). */
  pipe?: { buf: Uint8Array; have: number }
}

/** Blocking reads of a pipe on stdin (encodePipe): one batch of the default size. */
const PIPE_READ_BYTES = DEFAULT_BATCH_BYTES

/** stdin is a pipe (libvirt's, from QEMU) or a socket (a parent's socketpair): read with blocking reads. */
function stdinIsPipe(): boolean {
  try {
    const st = fstatSync(0)
    return st.isFIFO() || st.isSocket()
  } catch {
    return false
  }
}

/** Current offset of fd 0 when it is a regular file (libvirt hands restore the image fd after its header). */
function stdinFileOffset(): number | undefined {
  try {
    if (!fstatSync(0).isFile()) return undefined
    const m = /^pos:\s*(\d+)/m.exec(readFileSync('/proc/self/fdinfo/0', 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

/** Reads the first bytes of stdin; a regular file is peeked with pread and not consumed. */
async function sniffStdin(): Promise<Sniffed> {
  const pos = stdinFileOffset()
  if (pos !== undefined) {
    const b = Buffer.alloc(SNIFF_BYTES)
    let n = 0
    while (n < SNIFF_BYTES) {
      const r = readSync(0, b, n, SNIFF_BYTES - n, pos + n)
      if (r === 0) break
      n += r
    }
    return { bytes: b.subarray(0, n), consumed: false, rest: () => openInput(undefined) }
  }
  if (stdinIsPipe()) {
    // Blocking, before libuv opens stdin (and makes the pipe non-blocking): encodePipe reads on from here.
    const buf = new Uint8Array(PIPE_READ_BYTES)
    const have = fillBlocking(0, buf, 0, SNIFF_BYTES)
    const first = Buffer.from(buf.buffer, 0, have)
    async function* all(): AsyncGenerator<Buffer> {
      if (have > 0) yield Buffer.from(first)
      if (have < SNIFF_BYTES) return // the input ended there
      for await (const c of openInput(undefined)) yield c as Buffer
    }
    return {
      bytes: first.subarray(0, SNIFF_BYTES),
      consumed: true,
      rest: () => ReadableStream.from(all(), { objectMode: false }),
      pipe: { buf, have },
    }
  }
  const src = openInput(undefined)
  const it = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const chunks: Buffer[] = []
  let have = 0
  let done = false
  while (have < SNIFF_BYTES) {
    const r = await it.next()
    if (r.done) {
      done = true
      break
    }
    chunks.push(r.value)
    have += r.value.length
  }
  const first = Buffer.concat(chunks)
  async function* all(): AsyncGenerator<Buffer> {
    if (first.length) yield first
    if (done) return
    for (;;) {
      const r = await it.next()
      if (r.done) return
      yield r.value
    }
  }
  return {
    bytes: first.subarray(0, SNIFF_BYTES),
    consumed: true,
    rest: () => ReadableStream.from(all(), { objectMode: false }),
  }
}

/** Runs the real program with our argv; stdout/stderr are shared, stdin is shared or fed from `head`. */
async function runReal(
  path: string,
  name: string,
  args: string[],
  head: Sniffed | undefined,
): Promise<number> {
  const feed = head?.consumed === true
  // Loaded here, not at start-up: a save or restore of ours never runs another program.
  const { spawn } = process.getBuiltinModule('node:child_process')
  return new Promise<number>((resolve, reject) => {
    let self = path
    try {
      self = realpathSync(process.argv[1] ?? path)
    } catch {
      // informational only
    }
    const child = spawn(path, args, {
      argv0: name,
      stdio: [feed ? 'pipe' : 'inherit', 'inherit', 'inherit'],
      env: { ...process.env, [LOOP_GUARD_ENV]: self },
    })
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig)
    const handlers = (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const)
    for (const [s, h] of handlers) process.on(s, h)
    child.on('error', (e) =>
      reject(new HelperConfigError(`cannot run the real ${name} (${path}): ${e.message}`)),
    )
    child.on('close', (code, signal) => {
      for (const [s, h] of handlers) process.off(s, h)
      if (signal) {
        const num = { SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGKILL: 9, SIGPIPE: 13 }[signal as string] ?? 0
        resolve(128 + num)
      } else resolve(code ?? 1)
    })
    if (feed && child.stdin) {
      child.stdin.on('error', () => {}) // the real program may stop reading early; its exit status says why
      pipeline(head.rest(), child.stdin).catch(() => {})
    }
  })
}
