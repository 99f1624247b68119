/**
 * Stage `compress`: what format v2's per-batch second-stage compressor buys and costs, against `lzop -1` on the
 * same original bytes. It composes packages (adapter-libvirt's encoder and simulated guest, protocol's
 * compressors), so it lives here and not in @xbzrle/protocol, which depends on nothing of ours.
 *
 * For every stream (the real QEMU captures of packages/adapter-libvirt/fixtures/qemu-7.2 and simulated guests):
 *   1. XBZRLE-encode it once as format v1 (the frames a v2 batch carries), timing the encoder;
 *   2. per compressor, compress every batch's frame bytes, keep the smaller of plain/compressed (as the v2 writer
 *      does), time compression and decompression (median of the runs, round trip checked);
 *   3. run the Debian `lzop -1 -c` on the same original bytes as the baseline.
 * All times are CPU time (user + system): the machine may be shared, wall time would measure the neighbours.
 */
import { spawn, spawnSync } from 'node:child_process'
import { readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SimulatedGuest, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { CODEC_LEVELS, type CodecName, findCompressor } from '@xbzrle/protocol/v2'
import { CACHE, ensureDir, log, MB, median, ROOT } from './util.js'

export const FIXTURES = join(ROOT, 'packages/adapter-libvirt/fixtures/qemu-7.2')

export interface CompressRow {
  stream: string
  input: number
  codec: string
  out: number
  /** Frame bytes compressed per CPU second (lzop: input bytes). */
  compressMBs: number
  /** Input bytes per CPU second of XBZRLE encoder + second stage. */
  encodeMBs: number
  decompressMBs: number
  compressedBatches: string
}

interface Input {
  name: string
  bytes: Uint8Array
}

/** CPU time of this process in ms (user + system). */
const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}
const mbs = (bytes: number, ms: number) => (ms > 0 ? bytes / MB / (ms / 1000) : Number.POSITIVE_INFINITY)

async function inputs(quick: boolean): Promise<Input[]> {
  const out: Input[] = []
  for (const f of readdirSync(FIXTURES).sort()) {
    if (!f.endsWith('.zst')) continue
    // The Debian zstd (the bench installs it) decompresses: no decompressor dependency for the bench.
    const r = await runBytes('zstd', ['-dc', join(FIXTURES, f)])
    if (r.length < 4096) continue // postcopy-c0.d2s: a 40-byte return path
    out.push({ name: f.slice(0, -4), bytes: r })
  }
  const memMiB = quick ? 16 : 64
  const sim = (name: string, passes: number) => {
    const parts = [...new SimulatedGuest({ memMiB, passes }).stream()]
    out.push({ name: `sim-${memMiB}M-${name} (passes ${passes})`, bytes: Buffer.concat(parts) })
  }
  sim('save', 0)
  sim('migrate', 4)
  return out
}

function runBytes(file: string, args: string[]): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const c = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const chunks: Buffer[] = []
    let err = ''
    c.stdout.on('data', (d: Buffer) => chunks.push(d))
    c.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    c.on('error', reject)
    c.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${file} ${args.join(' ')}: ${err}`)),
    )
  })
}

/**
 * The frame bytes of each batch record of a v1 stream (SPEC.md: record kind 0x42, u32le length, varint seq, u32le
 * output length, u32le output CRC, then the frames up to the end of the record). Header and END records are
 * skipped. Throws on a record that does not fit.
 */
export function batchFrames(chunks: Uint8Array[]): Uint8Array[] {
  const frames: Uint8Array[] = []
  for (const c of chunks) {
    if (c[0] !== 0x42) continue
    const len = Buffer.from(c.buffer, c.byteOffset, c.length).readUInt32LE(1)
    let p = 5
    while (p < c.length && c[p]! & 0x80) p++ // the varint seq: continuation bytes, then its last byte
    const start = p + 1 + 8
    if (5 + len > c.length || start > 5 + len) throw new Error(`bad batch record (length ${len})`)
    frames.push(c.subarray(start, 5 + len))
  }
  return frames
}

/** XBZRLE-encodes `input` as v1 (best of up to 3 runs) and returns each batch's frame bytes, the v1 size and time. */
function encodeV1(input: Uint8Array, runs: number) {
  let best = Number.POSITIVE_INFINITY
  let chunks: Uint8Array[] = []
  for (let i = 0; i < Math.max(1, Math.min(runs, 3)); i++) {
    chunks = []
    const t0 = cpuMs()
    const enc = new XbzrleEncoder((c) => chunks.push(c), { formatVersion: 1 })
    for (let o = 0; o < input.length; o += 1 << 20) enc.push(input.subarray(o, o + (1 << 20)))
    enc.finish()
    best = Math.min(best, cpuMs() - t0)
  }
  const size = chunks.reduce((n, c) => n + c.length, 0)
  return { frames: batchFrames(chunks), size, ms: best }
}

/**
 * lzop -1 on the original bytes: output size and the least CPU time of `runs` runs. The time is bash's `times` for
 * its children (millisecond resolution; GNU time's 10 ms would round the ~1 MB captures to zero).
 */
function lzop(input: Uint8Array, runs: number): { out: number; ms: number } {
  const dir = ensureDir(join(CACHE, 'tmp', `compress-${process.pid}`))
  const file = join(dir, 'in')
  writeFileSync(file, input)
  try {
    let best = Number.POSITIVE_INFINITY
    for (let i = 0; i < runs; i++) {
      const r = spawnSync('bash', ['-c', 'lzop -1 -c "$1" > /dev/null && times', '_', file], {
        encoding: 'utf8',
      })
      if (r.status !== 0) throw new Error(`lzop failed: ${r.stderr}`)
      const children = r.stdout.trim().split('\n').at(-1) ?? ''
      const ms = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce(
        (sum, m) => sum + (Number(m[1]) * 60 + Number(m[2])) * 1000,
        0,
      )
      best = Math.min(best, ms)
    }
    const out = spawnSync('lzop', ['-1', '-c', file], { maxBuffer: 1 << 30 }).stdout.length
    return { out, ms: best }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** v2 size of a batch whose frames are stored compressed: the varint framesLength it adds. */
const varintLen = (n: number) => (n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4)

function secondStage(
  name: string,
  input: number,
  v1: ReturnType<typeof encodeV1>,
  codec: Exclude<CodecName, 'none'>,
  runs: number,
): CompressRow | undefined {
  const c = findCompressor(codec)
  if (!c) {
    log(`compress: ${codec} is not installed, skipped`)
    return undefined
  }
  const level = CODEC_LEVELS[codec].default
  const ct: number[] = []
  const dt: number[] = []
  let packed: (Uint8Array | undefined)[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = cpuMs()
    packed = v1.frames.map((f) => {
      const z = c.compress(f, level)
      return z.length + 4 < f.length ? z : undefined
    })
    ct.push(cpuMs() - t0)
    const t1 = cpuMs()
    for (let j = 0; j < packed.length; j++) {
      const z = packed[j]
      if (z) c.decompress(z, v1.frames[j]!.length)
    }
    dt.push(cpuMs() - t1)
  }
  // v2 = v1 + 1 byte per batch (payload encoding), + the varint framesLength of compressed batches.
  let out = v1.size + v1.frames.length + 1
  let kept = 0
  let decompressed = 0
  for (let j = 0; j < packed.length; j++) {
    const z = packed[j]
    const f = v1.frames[j]!
    if (!z) continue
    const back = c.decompress(z, f.length)
    if (Buffer.compare(back, f) !== 0) throw new Error(`${codec}: round trip failed on ${name}`)
    out -= f.length - z.length - varintLen(f.length)
    kept++
    decompressed += f.length
  }
  const frameBytes = v1.frames.reduce((n, f) => n + f.length, 0)
  return {
    stream: name,
    input,
    codec: `v2 ${codec} ${level}`,
    out,
    compressMBs: mbs(frameBytes, median(ct)),
    encodeMBs: mbs(input, v1.ms + median(ct)),
    decompressMBs: mbs(decompressed, median(dt)),
    compressedBatches: `${kept}/${v1.frames.length}`,
  }
}

export async function runCompress(opts: { quick: boolean; runs: number }): Promise<CompressRow[]> {
  const rows: CompressRow[] = []
  for (const { name, bytes } of await inputs(opts.quick)) {
    log(`compress: ${name} (${bytes.length} bytes)`)
    const v1 = encodeV1(bytes, opts.runs)
    const base = lzop(bytes, opts.runs)
    rows.push({
      stream: name,
      input: bytes.length,
      codec: 'lzop -1 (CLI)',
      out: base.out,
      compressMBs: mbs(bytes.length, base.ms),
      encodeMBs: mbs(bytes.length, base.ms),
      decompressMBs: Number.NaN,
      compressedBatches: '',
    })
    rows.push({
      stream: name,
      input: bytes.length,
      codec: 'v2 none (= v1 frames)',
      out: v1.size + v1.frames.length + 1,
      compressMBs: Number.NaN,
      encodeMBs: mbs(bytes.length, v1.ms),
      decompressMBs: Number.NaN,
      compressedBatches: `0/${v1.frames.length}`,
    })
    for (const codec of ['lz4', 'zstd', 'deflate'] as const) {
      const row = secondStage(name, bytes.length, v1, codec, opts.runs)
      if (row) rows.push(row)
    }
  }
  return rows
}
