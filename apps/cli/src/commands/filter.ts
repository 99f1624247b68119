import { createHash } from 'node:crypto'
import { resolve } from 'node:path'
import { PassThrough, Readable, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  type DecoderBase,
  DecodeStream,
  type EncoderBase,
  type EncoderStats,
  EncodeStream,
  peekStreamHeader,
  prepareDecoderBase,
  prepareEncoderBase,
  replay,
} from '@xbzrle/adapter-libvirt'
import type { Compression } from '@xbzrle/protocol'
import {
  baseFingerprint,
  baseRequirementOf,
  describeBaseRequirement,
  ProtocolError,
  type StreamHeader,
} from '@xbzrle/protocol'
import { type AtomicOutput, createAtomicOutput, installSignalHandlers } from '../atomic-output.js'
import {
  basesFor,
  basesForNewSave,
  DEFAULT_MAX_CHAIN,
  domainUuidOf,
  readChain,
  writeChain,
} from '../base-store.js'
import { CliError, ExitCode } from '../errors.js'
import { decoderFor, encoderFor, fileOutputSource, fileToFile } from '../file-filter.js'
import { checkInput, inputProblem } from '../input-check.js'
import {
  assertStdoutNotInput,
  bypassMode,
  defaultCompression,
  defaultThreads,
  formatBytes,
  openInput,
} from '../io.js'
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
  /** Compression worker threads (default: defaultThreads()). */
  threads?: number
  /** Bypass of the page path (encoder.ts): `auto` (default, with auto compression), `always` or `never`. */
  bypass?: 'auto' | 'always' | 'never'
  stats?: boolean
  /** A truncated or unparseable input is an error (exit 3) instead of a warning. */
  strict?: boolean
  /** Encode against this base image (and, for an xbzrle base, the bases it depends on, in order). */
  base?: string[]
  /** The libvirt save flow: encode against the previous save of the same domain kept in this directory. */
  baseStore?: string
  /** Longest chain of saves in the store (default DEFAULT_MAX_CHAIN). */
  maxChain?: number
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
  transform: (Readable & Writable) | (Readable & Writable)[],
  startProgress: () => Progress | undefined,
  check: () => void,
  source?: Readable,
): Promise<void> {
  installSignalHandlers()
  let out: AtomicOutput | undefined
  let progress: Progress | undefined
  try {
    if (output === undefined || output === '-') assertStdoutNotInput(input)
    else out = await createAtomicOutput(output, { sameAs: [input ?? '-'] })
    progress = startProgress()
    try {
      const steps = Array.isArray(transform) ? transform : [transform]
      const dest = out ? out.stream : process.stdout
      for (const step of steps) if (step instanceof EncodeStream) step.drainsInto(dest)
      await pipeline([source ?? openInput(input), ...steps, dest])
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
  const store = o.baseStore ? await storeForEncode(input, o) : undefined
  const base = o.base?.length ? await encoderBase(o) : undefined
  const obs = await startObservation('encode', o, o.output)
  const options = {
    cacheBytes: o.cacheSize,
    ways: o.ways,
    mode: o.mode,
    formatVersion: o.formatVersion,
    compression: o.compression ?? defaultCompression(o.output),
    bypass: bypassMode(o.bypass),
    passListener: obs.observer.listener,
    base,
  }
  // The base store hashes the input on its way (a stream step), so it keeps the stream path.
  const source = store ? undefined : fileOutputSource(input, o.output)
  const threads = o.threads ?? defaultThreads(undefined, typeof source === 'object')
  const { sink, encoder, stream } = encoderFor(source, { ...options, threads })
  obs.observer.attach(encoderSource(encoder))
  const progress = () =>
    obs.bar
      ? new Progress('encode', () => {
          const s = encoder.stats
          return { bytesIn: s.bytesIn, bytesOut: s.bytesOut, hitRate: hitRate(s) }
        })
      : undefined
  const check = () => {
    const problem = inputProblem(encoder.stats)
    if (problem === undefined) return
    if (o.strict) throw new CliError(`${problem.text} (--strict)`, ExitCode.BAD_INPUT)
    const same = problem.truncated ? '; the output decodes to the same truncated bytes' : ''
    process.stderr.write(`xbzrle encode: warning: ${problem.text}${same}\n`)
  }
  await obs.run(() =>
    stream
      ? filterToOutput(input, o.output, store ? [store.hasher, stream] : stream, progress, check)
      : fileToFile(input, o.output, source!, sink, encoder, true, progress, check),
  )
  store?.record()
  if (o.stats) process.stderr.write(encodeSummary(encoder.stats, started) + passTable(encoder.passes))
}

/**
 * `--base-store DIR` (the libvirt save flow): finds the chain of the save image's domain, sets `o.base` to it, and
 * returns a pass-through that hashes the save and `record()`, which adds the new save to the chain once the
 * output is complete.
 */
async function storeForEncode(input: string | undefined, o: EncodeCommandOptions) {
  if (input === undefined || input === '-')
    throw new CliError('--base-store needs the save image as a FILE argument', ExitCode.USAGE)
  if (o.output === undefined || o.output === '-')
    throw new CliError('--base-store needs -o FILE (the store refers to it)', ExitCode.USAGE)
  if (o.base?.length) throw new CliError('--base-store and --base exclude each other', ExitCode.USAGE)
  const dir = o.baseStore!
  const uuid = await domainUuidOf(input)
  const say = (s: string) => process.stderr.write(`xbzrle encode: domain ${uuid}: ${s}\n`)
  const chain = readChain(dir, uuid)
  o.base = basesForNewSave(chain, o.maxChain ?? DEFAULT_MAX_CHAIN, say)
  say(
    o.base.length
      ? `encoding against the previous save ${o.base[0]} (${o.base.length} in the chain)`
      : 'no previous save in the store: encoding standalone',
  )
  const hash = createHash('sha256')
  let bytes = 0
  const hasher = new PassThrough({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk)
      bytes += chunk.length
      cb(null, chunk)
    },
  })
  const record = () => {
    const entry = { fingerprint: `sha256:${hash.digest('hex')}`, bytes, path: resolve(o.output!) }
    writeChain(dir, uuid, [entry, ...(o.base!.length ? chain : [])])
  }
  return { hasher, record }
}

/**
 * Seeds the encoder's cache from `--base` (hashing it on the way). A base bigger than the cache seeds what fits,
 * the base's later pages last, and says so on stderr.
 */
async function encoderBase(o: EncodeCommandOptions): Promise<EncoderBase> {
  if (o.formatVersion !== undefined && o.formatVersion < 3)
    throw new CliError('--base needs format version 3 (the header names the base)', ExitCode.USAGE)
  const base = await prepareEncoderBase(o.base!, { cacheBytes: o.cacheSize, ways: o.ways, mode: o.mode })
  const s = base.seed
  if (s.evicted > 0)
    process.stderr.write(
      `xbzrle encode: base ${o.base![0]}: ${s.evicted} of its pages did not fit in the ${formatBytes(base.target.parameters.cacheBytes)} cache; ` +
        `seeded the ${s.seededPages} most recent (a bigger --cache-size keeps them all)\n`,
    )
  return base
}

export { checkInput, inputProblem }

export function encodeSummary(s: EncoderStats, started: bigint): string {
  const secs = Number(process.hrtime.bigint() - started) / 1e9
  const p = s.pages
  const hr = hitRate(s)
  const lines = [
    `xbzrle encode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out, ratio ${(s.bytesOut / Math.max(1, s.bytesIn)).toFixed(4)}`,
    `  pages: ${p.full} full, ${p.delta} delta, ${p.same} unchanged, ${p.zero} zero, ${p.foreign} qemu-xbzrle, ${p.compress} other${p.bypass ? `, ${p.bypass} past the cache (bypass)` : ''}`,
    `  cache: ${formatBytes(s.cacheBytes)}, hit rate ${hr === undefined ? '-' : `${(hr * 100).toFixed(1)}%`}, ${s.cache?.evictions ?? 0} evictions`,
    `  ${(s.bytesIn / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s`,
  ]
  return `${lines.join('\n')}\n`
}

export interface DecodeCommandOptions extends ObserveCommandOptions {
  output?: string
  maxCache?: number
  stats?: boolean
  /** The base image the stream was encoded against (then the bases it depends on, in order). */
  base?: string[]
  /** Find the base in this directory of the libvirt save flow (encode --base-store). */
  baseStore?: string
}

/** The bases of a stream from the save flow's directory; none found is a one-line refusal (exit 3). */
function chainFromStore(dir: string, header: StreamHeader): string[] {
  const req = baseRequirementOf(header)!
  const chain = basesFor(dir, baseFingerprint(req))
  if (!chain)
    throw new ProtocolError(
      'BASE_MISMATCH',
      `xbzrle base: the base store ${dir} has no save with ${describeBaseRequirement(req)} (deleted, or another store)`,
    )
  return chain
}

/**
 * With --base: reads the stream's header, seeds the cache from the base it names and verifies the base (all
 * before a byte is written); returns the input to decode (the header's chunks replayed) and the seeded cache.
 */
async function decoderBase(
  input: string | undefined,
  o: DecodeCommandOptions,
): Promise<{ source: Readable; base: DecoderBase | undefined; header: StreamHeader }> {
  const it = openInput(input)[Symbol.asyncIterator]()
  const peeked = await peekStreamHeader(it)
  const source = Readable.from(replay(peeked.head, it), { objectMode: false })
  if (!baseRequirementOf(peeked.header)) {
    process.stderr.write('xbzrle decode: note: the stream does not depend on a base image; --base ignored\n')
    return { source, base: undefined, header: peeked.header }
  }
  const chain = o.base?.length ? o.base : chainFromStore(o.baseStore!, peeked.header)
  const base = await prepareDecoderBase(chain, peeked.header, { maxCacheBytes: o.maxCache })
  return { source, base, header: peeked.header }
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
  const based = o.base?.length || o.baseStore ? await decoderBase(input, o) : undefined
  const obs = await startObservation('decode', o, o.output)
  const options = { maxCacheBytes: o.maxCache, passListener: obs.observer.listener, base: based?.base }
  // A based decode has read the header already (based.source replays it), so it keeps the stream path.
  const source = based ? undefined : fileOutputSource(input, o.output)
  const { sink, decoder, filter, stream } = decoderFor(source, options)
  obs.observer.attach(decoderSource(decoder))
  const progress = () =>
    obs.bar
      ? new Progress('decode', () => {
          const s = decoder.stats
          return { bytesIn: s.bytesIn, bytesOut: s.bytesOut }
        })
      : undefined
  await obs.run(() =>
    stream
      ? filterToOutput(input, o.output, stream, progress, () => {}, based?.source)
      : fileToFile(input, o.output, source!, sink, filter!, false, progress, () => {}),
  )
  if (o.stats) {
    const s = decoder.stats
    const secs = Number(process.hrtime.bigint() - started) / 1e9
    process.stderr.write(
      `xbzrle decode: ${formatBytes(s.bytesIn)} in, ${formatBytes(s.bytesOut)} out (format v${s.version}), ${(s.bytesOut / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s, ${secs.toFixed(2)} s\n` +
        passTable(decoder.passes),
    )
  }
}

/** The encode options plus the based stream's own base; `onto` is the new base (absent: flatten). */
export interface RebaseCommandOptions extends Omit<EncodeCommandOptions, 'base' | 'strict' | 'baseStore'> {
  /** The base the stream was encoded against (then the bases that one depends on). */
  base?: string[]
  /** Or find it in the libvirt save flow's directory. */
  baseStore?: string
  /** Re-encode against this base instead of writing a standalone stream. */
  onto?: string[]
  maxCache?: number
}

/**
 * `xbzrle rebase`: decodes a based stream against its base (verified first) and encodes the decoded bytes again,
 * standalone (flatten: the old image can then be dropped) or against another base (--onto). Memory: the two
 * caches plus a batch or two in flight; nothing is written unless the whole stream decoded and verified (-o).
 */
export async function runRebase(input: string, o: RebaseCommandOptions): Promise<void> {
  const started = process.hrtime.bigint()
  if (!o.base?.length && !o.baseStore)
    throw new CliError(
      "rebase needs --base FILE or --base-store DIR (where the stream's base is)",
      ExitCode.USAGE,
    )
  const based = await decoderBase(input, { base: o.base, baseStore: o.baseStore, maxCache: o.maxCache })
  const mode = o.mode ?? based.header.mode
  const onto = o.onto?.length ? await encoderBase({ ...o, mode, base: o.onto }) : undefined
  const dec = new DecodeStream({ maxCacheBytes: o.maxCache, base: based.base })
  const enc = new EncodeStream({
    cacheBytes: o.cacheSize,
    ways: o.ways,
    mode,
    formatVersion: o.formatVersion,
    compression: o.compression,
    base: onto,
  })
  await filterToOutput(
    input,
    o.output,
    [dec, enc],
    () => undefined,
    () => {},
    based.source,
  )
  if (o.stats) process.stderr.write(encodeSummary(enc.encoder.stats, started))
}
