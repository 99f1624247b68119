import type { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DecodeStream, type EncoderStats, EncodeStream } from '@xbzrle/adapter-libvirt'
import type { Compression } from '@xbzrle/protocol'
import { type AtomicOutput, createAtomicOutput, installSignalHandlers } from '../atomic-output.js'
import { CliError, ExitCode } from '../errors.js'
import { assertStdoutNotInput, defaultCompression, formatBytes, openInput } from '../io.js'
import {
  describeLibvirtImage,
  isHelperImage,
  readLibvirtImage,
  writeRawImage,
} from '../libvirt-helper/image.js'
import {
  decoderSource,
  encoderSource,
  type ObserveCommandOptions,
  passTable,
  startObservation,
} from '../observe/run.js'
import { Progress } from '../progress.js'

export interface EncodeCommandOptions extends ObserveCommandOptions {
  output?: string
  cacheSize?: number
  ways?: number
  mode?: 'canonical' | 'compact'
  formatVersion?: number
  /** Default: `auto` when the output is a pipe or socket (a live migration), the best installed codec for files. */
  compression?: Compression | 'auto'
  stats?: boolean
  /** A truncated or unparseable input is an error (exit 3) instead of a warning. */
  strict?: boolean
}

export function hitRate(s: EncoderStats): number | undefined {
  const c = s.cache
  if (!c || c.hits + c.misses === 0) return undefined
  return c.hits / (c.hits + c.misses)
}

/**
 * Runs input → transform → output. A named output (-o) is written atomically: the old file is replaced only
 * after `check` passed and everything was written and synced; on any error or signal it stays as it was.
 */
async function filterToOutput(
  input: string | undefined,
  output: string | undefined,
  transform: Readable & Writable,
  startProgress: () => Progress | undefined,
  check: () => void,
): Promise<void> {
  installSignalHandlers()
  let out: AtomicOutput | undefined
  let progress: Progress | undefined
  try {
    if (output === undefined || output === '-') assertStdoutNotInput(input)
    else out = await createAtomicOutput(output, { sameAs: [input ?? '-'] })
    progress = startProgress()
    try {
      const dest = out ? out.stream : process.stdout
      if (transform instanceof EncodeStream) transform.drainsInto(dest)
      await pipeline(openInput(input), transform, dest)
    } finally {
      progress?.stop()
    }
    check()
    await out?.commit()
  } catch (e) {
    progress?.stop()
    await out?.abort()
    throw e
  }
}

export async function runEncode(input: string | undefined, o: EncodeCommandOptions): Promise<void> {
  const lv =
    input !== undefined && input !== '-' ? await readLibvirtImage(input).catch(() => undefined) : undefined
  if (lv && isHelperImage(lv)) throw new CliError(describeLibvirtImage(lv, input!), ExitCode.BAD_INPUT)
  const started = process.hrtime.bigint()
  const obs = await startObservation('encode', o, o.output)
  const enc = new EncodeStream({
    cacheBytes: o.cacheSize,
    ways: o.ways,
    mode: o.mode,
    formatVersion: o.formatVersion,
    compression: o.compression ?? defaultCompression(o.output),
    passListener: obs.observer.listener,
  })
  obs.observer.attach(encoderSource(enc.encoder))
  const progress = () =>
    obs.bar
      ? new Progress('encode', () => {
          const s = enc.encoder.stats
          return { bytesIn: s.bytesIn, bytesOut: s.bytesOut, hitRate: hitRate(s) }
        })
      : undefined
  await obs.run(() =>
    filterToOutput(input, o.output, enc, progress, () => checkInput(enc.encoder.stats, o.strict)),
  )
  if (o.stats) process.stderr.write(encodeSummary(enc.encoder.stats, started) + passTable(enc.encoder.passes))
}

/** After an encode: a warning on stderr about the input, if anything was wrong with it (an error with --strict). */
export function checkInput(stats: EncoderStats, strict?: boolean): void {
  const problem = inputProblem(stats)
  if (problem === undefined) return
  if (strict) throw new CliError(`${problem.text} (--strict)`, ExitCode.BAD_INPUT)
  const same = problem.truncated ? '; the output decodes to the same truncated bytes' : ''
  process.stderr.write(`xbzrle encode: warning: ${problem.text}${same}\n`)
}

/**
 * What was wrong with an encoded input, if anything: the QEMU stream ended early (inside an item, or between
 * items before QEMU's end of stream), or part of the input could not be parsed and was copied as it is. The
 * output is byte-exact in every case; this only says that the input itself is probably not what the user
 * wants to keep. A stream whose parse ends at the device state (the normal end for QEMU 7.2: FULL sections
 * cannot be delimited) or at the trailer is complete as far as the reader can tell; a cut inside the device
 * state, after the RAM part, cannot be told apart from a complete stream.
 */
export function inputProblem(s: EncoderStats): { text: string; truncated: boolean } | undefined {
  const q = s.qemu
  const pt = q.passthrough
  const prefix = s.bytesIn - q.bytes // a libvirt save image's header and XML, outside the QEMU reader
  const truncated = (text: string) => ({ text: `the QEMU stream is truncated: ${text}`, truncated: true })
  if (s.bytesIn === 0) return { text: 'the input is empty: no QEMU stream', truncated: false }
  if (pt === undefined) {
    if (q.bytes === 0)
      return truncated(`the input ended after ${s.bytesIn} bytes, before the QEMU stream began`)
    return truncated(`the input ended at byte ${s.bytesIn}, before QEMU's end of stream`)
  }
  switch (pt.reason) {
    case 'trailer':
    case 'device-state':
      return undefined
    case 'truncated':
      return truncated(`${pt.detail} at byte ${prefix + pt.offset}`)
    case 'not-qemu':
      return {
        text: `the input is not a QEMU migration stream (${pt.detail}): copied unchanged, nothing saved`,
        truncated: false,
      }
    default:
      return {
        text: `from byte ${prefix + pt.offset} on, the input was copied unparsed (${pt.detail})`,
        truncated: false,
      }
  }
}
export function encodeSummary(s: EncoderStats, started: bigint): string {
  const secs = Number(process.hrtime.bigint() - started) / 1e9
  const p = s.pages
  const hr = hitRate(s)
  const lines = [
    `xbzrle encode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out, ratio ${(s.bytesOut / Math.max(1, s.bytesIn)).toFixed(4)}`,
    `  pages: ${p.full} full, ${p.delta} delta, ${p.same} unchanged, ${p.zero} zero, ${p.foreign} qemu-xbzrle, ${p.compress} other`,
    `  cache: ${formatBytes(s.cacheBytes)}, hit rate ${hr === undefined ? '-' : `${(hr * 100).toFixed(1)}%`}, ${s.cache?.evictions ?? 0} evictions`,
    `  ${(s.bytesIn / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s`,
  ]
  return `${lines.join('\n')}\n`
}

export interface DecodeCommandOptions extends ObserveCommandOptions {
  output?: string
  maxCache?: number
  stats?: boolean
}

export async function runDecode(input: string | undefined, o: DecodeCommandOptions): Promise<void> {
  const lv =
    input !== undefined && input !== '-' ? await readLibvirtImage(input).catch(() => undefined) : undefined
  if (lv && isHelperImage(lv)) {
    // a libvirt image the xbzrle helper wrote (header lzop/zstd, xbzrle payload): write the raw image
    installSignalHandlers()
    let out: AtomicOutput | undefined
    try {
      if (o.output === undefined || o.output === '-') assertStdoutNotInput(input)
      else out = await createAtomicOutput(o.output, { sameAs: [input!] })
      await writeRawImage(input!, lv, out ? out.stream : process.stdout)
      await out?.commit()
    } catch (e) {
      await out?.abort()
      throw e
    }
    process.stderr.write(
      `xbzrle decode: ${input}: libvirt image written by the xbzrle helper (header says ${lv.formatName}); wrote the raw image, virsh restore takes it\n`,
    )
    return
  }
  const started = process.hrtime.bigint()
  const obs = await startObservation('decode', o, o.output)
  const dec = new DecodeStream({ maxCacheBytes: o.maxCache, passListener: obs.observer.listener })
  obs.observer.attach(decoderSource(dec.decoder))
  const progress = () =>
    obs.bar
      ? new Progress('decode', () => {
          const s = dec.decoder.stats
          return { bytesIn: s.bytesIn, bytesOut: s.bytesOut }
        })
      : undefined
  await obs.run(() => filterToOutput(input, o.output, dec, progress, () => {}))
  if (o.stats) {
    const s = dec.decoder.stats
    const secs = Number(process.hrtime.bigint() - started) / 1e9
    process.stderr.write(
      `xbzrle decode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out (format v${s.version}), ${(s.bytesOut / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s\n` +
        passTable(dec.decoder.passes),
    )
  }
}
