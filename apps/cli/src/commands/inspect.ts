import { open } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  ACCEPTED_CRITICAL,
  type EncoderStats,
  parseSaveImageHeader,
  SAVE_HEADER_SIZE,
  saveImageXml,
  sniffSaveImage,
  XbzrleDecoder,
  XbzrleEncoder,
} from '@xbzrle/adapter-libvirt'
import {
  type BaseRequirement,
  baseFingerprint,
  baseRequirementOf,
  describeBaseRequirement,
  type EndFrame,
  FrameReader,
  isXbzrleStream,
  type StreamHeader,
} from '@xbzrle/protocol'
import { formatBytes, openInput } from '../io.js'
import { describeLibvirtImage, isHelperImage, readLibvirtImage } from '../libvirt-helper/image.js'
import { passTable } from '../observe/run.js'
import type { PassStatsJson } from '../observe/schemas.js'

export interface InspectOptions {
  json?: boolean
  cacheSize?: number
}

async function readHead(path: string, n: number): Promise<Uint8Array> {
  const fh = await open(path, 'r')
  try {
    const buf = new Uint8Array(n)
    const { bytesRead } = await fh.read(buf, 0, n, 0)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

/** Drains a Readable through a per-chunk function with backpressure. */
async function drain(path: string, each: (chunk: Uint8Array) => void): Promise<void> {
  await pipeline(
    openInput(path),
    new Writable({
      highWaterMark: 1 << 20,
      write(chunk, _e, cb) {
        try {
          each(chunk)
          cb()
        } catch (e) {
          cb(e as Error)
        }
      },
    }),
  )
}

/** A pass as JSON (no undefined hitRate). */
function passJson(p: PassStatsJson): PassStatsJson {
  const { hitRate, ...rest } = p
  return hitRate === undefined ? rest : { ...rest, hitRate }
}

/** A stream's base requirement as `inspect` reports it. */
function baseJson(r: BaseRequirement) {
  return {
    fingerprint: baseFingerprint(r),
    bytes: r.baseBytes,
    name: r.name,
    seededPages: r.seededPages,
  }
}

async function inspectXbzrle(path: string) {
  const reader = new FrameReader({ acceptCritical: ACCEPTED_CRITICAL })
  // The per-pass view needs QEMU's stream: decode it and run it through an encoder with the stream's cache
  // parameters (pages by kind and re-sends are the stream's; bytes out are those of that re-encode).
  let encoder: XbzrleEncoder | undefined
  const decoder = new XbzrleDecoder((c) => {
    if (!encoder) {
      const h = decoder.stats.header
      encoder = new XbzrleEncoder(() => {}, {
        cacheBytes: h?.cache.cacheBytes,
        ways: h?.cache.ways,
        mode: h?.mode,
        targetPageSize: h?.pageSize,
        formatVersion: decoder.stats.version,
      })
    }
    encoder.push(c)
  })
  let header: StreamHeader | undefined
  let base: BaseRequirement | undefined
  let version = 0
  let end: EndFrame | undefined
  let batches = 0
  let bytes = 0
  const frames: Record<string, number> = {}
  const take = () => {
    for (let item = reader.next(); item; item = reader.next()) {
      if (item.type === 'header') {
        header = item.header
        version = item.version
        base = baseRequirementOf(item.header)
      } else if (item.type === 'batch') {
        batches++
        for (const f of item.batch.frames()) frames[f.kind] = (frames[f.kind] ?? 0) + 1
      } else end = item.end
    }
  }
  await drain(path, (c) => {
    bytes += c.length
    reader.push(c)
    take()
    // A based stream decodes only with its base: no per-pass view of the decoded stream then.
    if (!base) decoder.push(c)
  })
  reader.finish()
  if (!base) decoder.finish()
  take()
  encoder?.finish()
  const passes = (encoder?.passes ?? []).map(passJson)
  return {
    kind: 'xbzrle' as const,
    bytes,
    version,
    header,
    base: base ? baseJson(base) : undefined,
    batches,
    frames,
    end,
    passes,
  }
}

async function inspectQemu(path: string, cacheSize: number | undefined) {
  let out = 0
  const enc = new XbzrleEncoder((c) => (out += c.length), { cacheBytes: cacheSize })
  await drain(path, (c) => enc.push(c))
  enc.finish()
  const s: EncoderStats = enc.stats
  return { stats: s, saveImage: enc.saveImage, encodedBytes: out, passes: enc.passes.map(passJson) }
}

export async function runInspect(path: string, o: InspectOptions): Promise<void> {
  const head = path === '-' ? undefined : await readHead(path, SAVE_HEADER_SIZE)
  let report: Record<string, unknown>
  const lv = head && sniffSaveImage(head) === 'complete' ? await readLibvirtImage(path) : undefined
  if (lv && lv.format !== 0) {
    // libvirt compressed the QEMU stream (or the xbzrle helper wrote its stream where libvirt expects lzop/zstd)
    const note = describeLibvirtImage(lv, path)
    const r = {
      kind: 'libvirt-save',
      format: lv.formatName,
      payload: lv.payload,
      helperImage: isHelperImage(lv),
      streamOffset: lv.streamOffset,
      note,
    }
    process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : `${note}\n`)
    return
  }
  if (head && isXbzrleStream(head)) {
    report = await inspectXbzrle(path)
  } else {
    const r = await inspectQemu(path, o.cacheSize)
    const q = r.stats.qemu
    let libvirt: Record<string, unknown> | undefined
    if (head && sniffSaveImage(head) !== undefined) {
      const h = parseSaveImageHeader(head)
      const data = await readHead(path, SAVE_HEADER_SIZE + Math.min(h.dataLen, 1 << 20))
      const xml = saveImageXml(data.subarray(SAVE_HEADER_SIZE))
      libvirt = { ...h, domain: /<name>([^<]*)<\/name>/.exec(xml)?.[1], xmlBytes: xml.length }
    }
    report = {
      kind: libvirt ? 'libvirt-save' : q.passthrough?.reason === 'not-qemu' ? 'unknown' : 'qemu',
      bytes: r.stats.bytesIn,
      libvirt,
      machine: q.machine,
      capabilities: q.capabilities,
      postcopy: q.postcopy,
      blocks: q.blocks,
      ramBytes: q.blocks.reduce((a, b) => a + b.usedLength, 0),
      sections: { ...q.sections, ram: q.ramSections },
      pages: q.pages,
      resentPages: q.resentPages,
      passes: r.passes,
      unparsed: q.passthrough
        ? {
            from: q.passthrough.offset,
            reason: q.passthrough.reason,
            detail: q.passthrough.detail,
            bytes: q.passthroughBytes,
          }
        : undefined,
      xbzrle: {
        cacheBytes: r.stats.cacheBytes,
        encodedBytes: r.encodedBytes,
        ratio: r.encodedBytes / Math.max(1, r.stats.bytesIn),
        frames: r.stats.pages,
        hits: r.stats.cache?.hits,
        misses: r.stats.cache?.misses,
        savedBytes: r.stats.bytesIn - r.encodedBytes,
      },
    }
  }
  process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : human(report))
}

function human(r: Record<string, unknown>): string {
  const lines: string[] = []
  const bytes = r.bytes as number
  if (r.kind === 'xbzrle') {
    const h = r.header as StreamHeader | undefined
    const end = r.end as EndFrame | undefined
    lines.push(`xbzrle stream, format v${r.version}, ${formatBytes(bytes)}`)
    if (h) {
      lines.push(`  source: ${h.source}, page size ${h.pageSize}, mode ${h.mode}`)
      lines.push(`  cache: ${formatBytes(h.cache.cacheBytes)}, ${h.cache.ways}-way, ${h.cache.policy}`)
      const base = baseRequirementOf(h)
      if (base)
        lines.push(
          `  depends on base image ${describeBaseRequirement(base)} (decode needs --base FILE; \`xbzrle rebase --flatten\` removes the dependency)`,
        )
    }
    lines.push(`  batches: ${r.batches}`)
    lines.push(
      `  frames: ${Object.entries(r.frames as Record<string, number>)
        .map(([k, v]) => `${v} ${k}`)
        .join(', ')}`,
    )
    if (end)
      lines.push(
        `  decodes to ${formatBytes(end.totalBytes)} (ratio ${(bytes / Math.max(1, end.totalBytes)).toFixed(4)})`,
      )
    const table = passTable(r.passes as PassStatsJson[])
    if (table)
      lines.push(
        `${table.trimEnd()}\n  (passes of the decoded QEMU stream; bytes out of a re-encode with the stream's parameters)`,
      )
    return `${lines.join('\n')}\n`
  }
  const lv = r.libvirt as Record<string, unknown> | undefined
  if (r.kind === 'unknown') {
    lines.push(`not a QEMU migration stream, libvirt save image or xbzrle stream (${formatBytes(bytes)})`)
    return `${lines.join('\n')}\n`
  }
  lines.push(`${lv ? 'libvirt save image' : 'QEMU migration stream'}, ${formatBytes(bytes)}`)
  if (lv)
    lines.push(`  domain: ${lv.domain ?? '?'}, was running: ${lv.wasRunning}, XML area ${lv.dataLen} bytes`)
  lines.push(`  machine: ${r.machine ?? '(not sent: machine type <= 2.3)'}${r.postcopy ? ', postcopy' : ''}`)
  const caps = r.capabilities as string[]
  if (caps.length) lines.push(`  capabilities: ${caps.join(', ')}`)
  const blocks = r.blocks as Array<{ name: string; usedLength: number }>
  lines.push(`  RAM blocks (${formatBytes(r.ramBytes as number)}):`)
  for (const b of blocks) lines.push(`    ${b.name.padEnd(28)} ${formatBytes(b.usedLength)}`)
  const s = r.sections as Record<string, number>
  lines.push(
    `  RAM sections: ${s.ram} (START ${s.start}, PART ${s.part}, END ${s.end}); commands: ${s.commands}`,
  )
  const p = r.pages as Record<string, number>
  lines.push(`  page records: ${p.page} PAGE, ${p.zero} ZERO, ${p.xbzrle} XBZRLE, ${p.compress} COMPRESS`)
  lines.push(`  re-sent pages: ${r.resentPages}`)
  const u = r.unparsed as { from: number; reason: string; detail: string; bytes: number } | undefined
  if (u) lines.push(`  copied unparsed from byte ${u.from}: ${formatBytes(u.bytes)} (${u.detail})`)
  const x = r.xbzrle as { cacheBytes: number; encodedBytes: number; ratio: number; savedBytes: number }
  lines.push(
    `  with xbzrle (cache ${formatBytes(x.cacheBytes)}): ${formatBytes(x.encodedBytes)}, ratio ${x.ratio.toFixed(4)}, saves ${formatBytes(Math.max(0, x.savedBytes))}`,
  )
  const table = passTable(r.passes as PassStatsJson[])
  if (table) lines.push(table.trimEnd())
  return `${lines.join('\n')}\n`
}
