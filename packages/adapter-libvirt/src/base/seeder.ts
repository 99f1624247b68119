import type { Hash } from 'node:crypto'
import { emptyStats, type PageDeltaDecoder, type PageDeltaEncoder } from '@xbzrle/codec'
import {
  parseSaveImageHeader,
  SAVE_HEADER_SIZE,
  saveImageXml,
  sniffSaveImage,
} from '../libvirt/save-image.js'
import { DEFAULT_TARGET_PAGE_SIZE } from '../qemu/format.js'
import { type PageRecord, QemuStreamReader } from '../qemu/stream-reader.js'

/** The codec state a base seeds: an encoder's or a decoder's (the same cache operations on both). */
export type SeedTarget = PageDeltaEncoder | PageDeltaDecoder

/** The base's domain XML is kept up to this size (for the domain UUID of the libvirt save flow). */
const MAX_XML_BYTES = 1 << 20

export interface SeedResult<T extends SeedTarget = SeedTarget> {
  /** The seeded codec state; undefined only if the base had no bytes at all and no state was asked for. */
  target: T
  /** SHA-256 of every byte pushed (the base's original bytes). */
  digest: Uint8Array
  bytes: number
  /** RAM block names in the order the base first named them: block id i of the seeded cache is names[i]. */
  blockNames: string[]
  ramBytes: number
  /** Page records of the base (page, zero, xbzrle, other). */
  records: number
  /** Occupied cache slots after seeding. */
  seededPages: number
  /** Seeded pages a later page of the base evicted (the base did not fit in the cache). */
  evicted: number
  /** Why the base is not a usable QEMU stream, if it is not one. */
  notQemu?: string
  /** The domain XML of a libvirt save image base. */
  domainXml?: string
}

/**
 * Seeds a page cache from a base image (issue #15, SPEC.md §12.7) while hashing it. Push the base's original
 * bytes (a QEMU stream or a libvirt save image, an xbzrle base already decoded) in any chunks; `finish()` gives
 * the digest and the seeded state. Encoder and decoder run this same code on the same bytes, so their caches
 * come out identical: every PAGE record stores its page (PageCache.seedSlot: no age rule, the base's later
 * pages win), a ZERO record stores a fill page, QEMU's XBZRLE record updates a cached page, anything else
 * (compressed pages) drops the key. Memory: the cache plus one parser item; the base streams through.
 */
export class BaseSeeder<T extends SeedTarget = SeedTarget> {
  // Loaded here, not imported: the CLI's filters import this module, and node:crypto costs 3-5 ms of their start.
  private readonly hash: Hash = process.getBuiltinModule('node:crypto').createHash('sha256')
  private readonly reader: QemuStreamReader
  private readonly pageSize: number
  private target: T | undefined
  private bytes = 0
  private records = 0
  private evictionsBefore = 0
  /** Prefix bytes (a libvirt save image's header and XML area) still to skip; -1 until known. */
  private skip = -1
  private prefixAt = 0
  private held: Uint8Array[] = []
  private heldBytes = 0
  private xml: Uint8Array[] = []
  private xmlBytes = 0

  /**
   * `create(ramBytes)` makes the state to seed, once the base's RAM size is known (at its first page record, or
   * at the end): the encoder sizes its cache from it, the decoder builds the cache its stream header names.
   */
  constructor(
    private readonly create: (ramBytes: number) => T,
    options: { targetPageSize?: number } = {},
  ) {
    this.pageSize = options.targetPageSize ?? DEFAULT_TARGET_PAGE_SIZE
    this.reader = new QemuStreamReader(
      { verbatim: () => {}, page: (r) => this.onPage(r) },
      { targetPageSize: this.pageSize },
    )
  }

  push(chunk: Uint8Array): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    if (this.skip === 0) this.reader.push(chunk)
    else this.route(chunk)
  }

  finish(): SeedResult<T> {
    // Shorter than a save image header: whatever it is goes to the QEMU reader.
    if (this.skip < 0 && this.heldBytes > 0) this.reader.push(concat(this.held, this.heldBytes))
    this.skip = 0
    this.reader.finish()
    const target = this.state()
    const cache = target.cache
    const q = this.reader.stats
    const evicted = cache.stats.evictions - this.evictionsBefore
    // The seeding is not part of the stream's statistics (they count what the stream itself did).
    Object.assign(cache.stats, emptyStats())
    const notQemu =
      this.bytes === 0
        ? 'it is empty'
        : q.passthrough?.reason === 'not-qemu'
          ? q.passthrough.detail
          : q.blocks.length === 0
            ? 'it has no RAM block list'
            : undefined
    return {
      target,
      digest: new Uint8Array(this.hash.digest()),
      bytes: this.bytes,
      blockNames: q.blocks.map((b) => b.name),
      ramBytes: this.reader.ramBytes,
      records: this.records,
      seededPages: cache.size,
      evicted,
      ...(notQemu ? { notQemu } : {}),
      ...(this.xmlBytes > 0 ? { domainXml: saveImageXml(concat(this.xml, this.xmlBytes)) } : {}),
    }
  }

  private state(): T {
    if (!this.target) {
      this.target = this.create(this.reader.ramBytes)
      this.evictionsBefore = this.target.cache.stats.evictions
    }
    return this.target
  }

  private onPage(r: PageRecord): void {
    const t = this.state()
    const c = t.cache
    this.records++
    switch (r.kind) {
      case 'page':
        if (r.body.length !== this.pageSize) break
        c.writePage(c.seedSlot(r.blockId, r.pageIndex), r.body)
        return
      case 'zero':
        c.setFill(c.seedSlot(r.blockId, r.pageIndex), r.body[0]!)
        return
      case 'xbzrle':
        t.applyForeignDelta(r.blockId, r.pageIndex, r.body.subarray(3))
        return
      case 'compress':
        break
    }
    t.invalidate(r.blockId, r.pageIndex)
  }

  /**
   * Routes the base's bytes: a libvirt save image's header and XML area (the domain XML is kept) are skipped,
   * the QEMU stream goes to the reader. Whether there is such a prefix is known once SAVE_HEADER_SIZE bytes are in.
   */
  private route(chunk: Uint8Array): void {
    let c = chunk
    if (this.skip < 0) {
      this.held.push(chunk.slice())
      this.heldBytes += chunk.length
      if (this.heldBytes < SAVE_HEADER_SIZE) return
      c = concat(this.held, this.heldBytes)
      this.held = []
      const isSave = sniffSaveImage(c) === 'complete'
      this.skip = isSave ? SAVE_HEADER_SIZE + parseSaveImageHeader(c).dataLen : 0
      this.prefixAt = 0
    }
    const n = Math.min(this.skip, c.length)
    // The XML area follows the fixed header; keep its start (the XML is NUL-terminated, the rest is padding).
    const from = Math.max(0, SAVE_HEADER_SIZE - this.prefixAt)
    const to = Math.min(n, MAX_XML_BYTES + SAVE_HEADER_SIZE - this.prefixAt)
    if (to > from) {
      this.xml.push(c.slice(from, to))
      this.xmlBytes += to - from
    }
    this.prefixAt += n
    this.skip -= n
    if (n < c.length) this.reader.push(c.subarray(n))
  }
}

function concat(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
