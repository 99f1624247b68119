import {
  Command,
  DEFAULT_TARGET_PAGE_SIZE,
  type PageKind,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
  RamFlag,
  Section,
  XBZRLE_ENCODING_FLAG,
} from './format.js'

/**
 * One RAM page record as it lies in the stream. The object and its views are reused: they are valid only
 * during the `page` callback.
 */
export interface PageRecord {
  kind: PageKind
  /** Small integer, in order of first appearance of the block name (block list order for real streams). */
  blockId: number
  blockName: string
  /** Byte offset inside the RAM block. */
  offset: number
  /** offset / target page size. */
  pageIndex: number
  /** The record header exactly as it was: be64 (offset | flags) plus the counted block name if present. */
  header: Uint8Array
  /** Everything after the header: the fill byte (zero), the page (page), `01 be16 n data` (xbzrle), `be32 n data` (compress). */
  body: Uint8Array
}

export interface QemuStreamHandler {
  /** Bytes that are not page records, in stream order. The view is valid only during the call. */
  verbatim(bytes: Uint8Array): void
  page(record: PageRecord): void
}

export interface RamBlock {
  id: number
  name: string
  usedLength: number
}

/** Why the reader stopped parsing and passes the rest through verbatim. */
export type PassthroughReason =
  | 'not-qemu' // no QEVM magic / unknown version
  | 'device-state' // FULL section or another handler's section: undelimitable without vmstate descriptions
  | 'trailer' // after QEMU_VM_EOF (the VMDESCRIPTION JSON)
  | 'unsupported' // a construct this reader does not know (RDMA hook, unknown flags, odd configuration)
  | 'truncated' // input ended inside an item

export interface QemuStreamStats {
  /** Bytes consumed so far. */
  bytes: number
  pages: Record<PageKind, number>
  /** Page records that named their block (CONTINUE clear). */
  namedRecords: number
  sections: { start: number; part: number; end: number; full: number; commands: number }
  ramSections: number
  /** Where pass-through started (byte offset) and why; undefined while still parsing. */
  passthrough?: { offset: number; reason: PassthroughReason; detail: string }
  /** Bytes copied through without being parsed, from the pass-through point on. */
  passthroughBytes: number
  machine?: string
  capabilities: string[]
  blocks: RamBlock[]
  postcopy: boolean
  /** Page records whose (block, page) had been sent before in this stream. */
  resentPages: number
}

enum State {
  FileHeader,
  ConfigStart,
  ConfigSubsection,
  TopLevel,
  BlockListHeader,
  Block,
  RamRecord,
  Footer,
  Skip, // a counted blob inside the grammar (PACKAGED), copied verbatim
  Passthrough,
}

/** Every item the parser needs whole is at most this big (a 64 KiB command is the largest). */
const MAX_ITEM = 70 * 1024

const latin1 = new TextDecoder('latin1')

/**
 * Incremental parser of QEMU's migration stream (main channel, QEMU 7.2 … 10.x). It splits the input into
 * verbatim spans and page records, and never guesses: from the first item it cannot delimit with certainty, it
 * passes everything through verbatim. Concatenating every verbatim span and every record's header+body in
 * callback order gives back the input exactly, whatever the input is.
 */
export class QemuStreamReader {
  readonly stats: QemuStreamStats
  private readonly pageSize: number
  private readonly pageShift: number
  private state = State.FileHeader
  private readonly carry = new Uint8Array(MAX_ITEM * 2)
  private carryLen = 0
  private skipLeft = 0
  private stateAfterSkip = State.TopLevel
  private ramSectionId = -1
  private sectionId = 0
  private blockTotalLeft = 0
  private ignoreShared = false
  private postcopyPageSizes = false
  private readonly blockIds = new Map<string, number>()
  private readonly blockNames: string[] = []
  private curBlock = -1
  private readonly record: PageRecord
  private readonly sentBefore = new Map<number, Uint8Array>() // blockId -> bitmap of pages seen
  /** Absolute stream offset of buf[0] during parse(). */
  private base = 0
  private vStart = 0

  constructor(
    private readonly handler: QemuStreamHandler,
    options: { targetPageSize?: number } = {},
  ) {
    this.pageSize = options.targetPageSize ?? DEFAULT_TARGET_PAGE_SIZE
    if (!Number.isInteger(Math.log2(this.pageSize)) || this.pageSize < 1024 || this.pageSize > 65536) {
      throw new RangeError(`target page size must be a power of two in 1024..65536, got ${this.pageSize}`)
    }
    this.pageShift = Math.log2(this.pageSize)
    this.stats = {
      bytes: 0,
      pages: { page: 0, zero: 0, xbzrle: 0, compress: 0 },
      namedRecords: 0,
      sections: { start: 0, part: 0, end: 0, full: 0, commands: 0 },
      ramSections: 0,
      passthroughBytes: 0,
      capabilities: [],
      blocks: [],
      postcopy: false,
      resentPages: 0,
    }
    this.record = {
      kind: 'page',
      blockId: 0,
      blockName: '',
      offset: 0,
      pageIndex: 0,
      header: new Uint8Array(0),
      body: new Uint8Array(0),
    }
  }

  push(input: Uint8Array): void {
    // Plain Uint8Array views: a Node Buffer's subarray() builds a Buffer, which costs more per record.
    const chunk =
      input.constructor === Uint8Array ? input : new Uint8Array(input.buffer, input.byteOffset, input.length)
    let off = 0
    if (this.carryLen > 0) {
      // Finish the item that straddles the chunk boundary in a small combined buffer, then go on in the chunk
      // itself, so that chunks are never copied whole. Most items are a page record (< 4.4 KiB): start with
      // a little more than that and grow only for the rare bigger item.
      let take = Math.min(chunk.length, 8192)
      for (;;) {
        this.carry.set(chunk.subarray(0, take), this.carryLen)
        const combined = this.carry.subarray(0, this.carryLen + take)
        const used = this.parse(combined, this.stats.bytes)
        if (used >= this.carryLen) {
          if (used < combined.length && take === chunk.length) {
            // The whole chunk fitted and another item is incomplete: keep what is left.
            this.carry.copyWithin(0, used, combined.length)
            this.carryLen = combined.length - used
            return
          }
          off = used - this.carryLen
          this.carryLen = 0
          break
        }
        // Nothing was consumed: the carried item needs more bytes than we gave it.
        if (take === chunk.length) {
          this.carryLen += take
          return
        }
        if (take >= MAX_ITEM) throw new Error('QemuStreamReader: internal error, item larger than MAX_ITEM')
        take = Math.min(chunk.length, take * 4, MAX_ITEM)
      }
    }
    const used = off + this.parse(chunk.subarray(off), this.stats.bytes)
    const left = chunk.length - used
    if (left > MAX_ITEM) throw new Error('QemuStreamReader: internal error, item larger than MAX_ITEM')
    this.carry.set(chunk.subarray(used), 0)
    this.carryLen = left
  }

  /** Call at end of input. Bytes of an unfinished item are passed through verbatim. */
  finish(): void {
    if (this.carryLen > 0) {
      if (this.state !== State.Passthrough) {
        this.startPassthrough(
          this.stats.bytes,
          'truncated',
          `input ended inside an item (${this.carryLen} bytes)`,
        )
      }
      const rest = this.carry.subarray(0, this.carryLen)
      this.stats.passthroughBytes += rest.length
      this.stats.bytes += rest.length
      this.handler.verbatim(rest)
      this.carryLen = 0
    }
  }

  /** The block list learnt from the RAM setup section, if any (for sizing a cache). */
  get ramBytes(): number {
    return this.stats.blocks.reduce((s, b) => s + b.usedLength, 0)
  }

  private startPassthrough(offset: number, reason: PassthroughReason, detail: string): void {
    this.state = State.Passthrough
    this.stats.passthrough = { offset, reason, detail }
  }

  private flushVerbatim(buf: Uint8Array, pos: number): void {
    if (pos > this.vStart) this.handler.verbatim(buf.subarray(this.vStart, pos))
    this.vStart = pos
  }

  /** Parses whole items from buf; returns how many bytes were consumed (and emitted). */
  private parse(buf: Uint8Array, base: number): number {
    this.base = base
    this.vStart = 0
    const end = buf.length
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    let pos = 0
    loop: for (;;) {
      const avail = end - pos
      switch (this.state) {
        case State.FileHeader: {
          if (avail < 8) break loop
          if (dv.getUint32(pos) !== QEMU_VM_FILE_MAGIC || dv.getUint32(pos + 4) !== QEMU_VM_FILE_VERSION) {
            this.startPassthrough(base + pos, 'not-qemu', 'no QEVM magic with version 3')
            continue
          }
          pos += 8
          this.state = State.ConfigStart
          continue
        }
        case State.ConfigStart: {
          if (avail < 1) break loop
          if (buf[pos] !== Section.Configuration) {
            this.state = State.TopLevel
            continue
          }
          if (avail < 5) break loop
          const len = dv.getUint32(pos + 1)
          if (len > 1024) {
            this.startPassthrough(base + pos, 'unsupported', `configuration name of ${len} bytes`)
            continue
          }
          if (avail < 5 + len) break loop
          this.stats.machine = latin1.decode(buf.subarray(pos + 5, pos + 5 + len))
          pos += 5 + len
          this.state = State.ConfigSubsection
          continue
        }
        case State.ConfigSubsection: {
          if (avail < 1) break loop
          if (buf[pos] !== Section.Subsection) {
            this.state = State.TopLevel
            continue
          }
          const used = this.parseConfigSubsection(buf, dv, pos, end)
          if (used === 0) break loop
          if (used < 0) continue // switched to pass-through
          pos += used
          continue
        }
        case State.TopLevel: {
          if (avail < 1) break loop
          const used = this.parseTopLevel(buf, dv, pos, end)
          if (used === 0) break loop
          if (used < 0) continue
          pos += used
          continue
        }
        case State.BlockListHeader: {
          if (avail < 8) break loop
          const hi = dv.getUint32(pos)
          const lo = dv.getUint32(pos + 4)
          if ((lo & (this.pageSize - 1)) !== RamFlag.MemSize) {
            this.startPassthrough(base + pos, 'unsupported', 'RAM setup section without MEM_SIZE')
            continue
          }
          this.blockTotalLeft = hi * 2 ** 32 + (lo - RamFlag.MemSize)
          pos += 8
          this.state = this.blockTotalLeft > 0 ? State.Block : State.RamRecord
          continue
        }
        case State.Block: {
          const used = this.parseBlock(buf, dv, pos, end)
          if (used === 0) break loop
          if (used < 0) continue
          pos += used
          continue
        }
        case State.RamRecord: {
          const used = this.parseRamRecord(buf, dv, pos, end)
          if (used === 0) break loop
          if (used < 0) continue
          pos += used
          continue
        }
        case State.Footer: {
          if (avail < 1) break loop
          if (buf[pos] !== Section.Footer) {
            this.state = State.TopLevel // machine types <= 2.3 send no footers
            continue
          }
          if (avail < 5) break loop
          if (dv.getUint32(pos + 1) !== this.sectionId) {
            this.startPassthrough(base + pos, 'unsupported', 'section footer does not match the section id')
            continue
          }
          pos += 5
          this.state = State.TopLevel
          continue
        }
        case State.Skip: {
          if (avail < 1 && this.skipLeft > 0) break loop
          const n = Math.min(avail, this.skipLeft)
          pos += n
          this.skipLeft -= n
          if (this.skipLeft === 0) this.state = this.stateAfterSkip
          else break loop
          continue
        }
        case State.Passthrough: {
          this.stats.passthroughBytes += avail
          pos = end
          break loop
        }
      }
    }
    this.flushVerbatim(buf, pos)
    this.stats.bytes = base + pos
    return pos
  }

  private parseConfigSubsection(buf: Uint8Array, dv: DataView, pos: number, end: number): number {
    if (end - pos < 2) return 0
    const nameLen = buf[pos + 1]!
    const head = 2 + nameLen + 4
    if (end - pos < head) return 0
    const name = latin1.decode(buf.subarray(pos + 2, pos + 2 + nameLen))
    let p = pos + head
    switch (name) {
      case 'configuration/target-page-bits': {
        if (end - p < 4) return 0
        const bits = dv.getUint32(p)
        if (2 ** bits !== this.pageSize) {
          this.startPassthrough(
            this.base + pos,
            'unsupported',
            `target page bits ${bits} (reader set to ${this.pageSize})`,
          )
          return -1
        }
        return head + 4
      }
      case 'configuration/capabilities': {
        if (end - p < 4) return 0
        const count = dv.getUint32(p)
        if (count > 64) {
          this.startPassthrough(this.base + pos, 'unsupported', `${count} capabilities in configuration`)
          return -1
        }
        p += 4
        const caps: string[] = []
        for (let i = 0; i < count; i++) {
          if (end - p < 1) return 0
          const len = buf[p]!
          if (end - p < 1 + len) return 0
          caps.push(latin1.decode(buf.subarray(p + 1, p + 1 + len)))
          p += 1 + len
        }
        this.stats.capabilities = caps
        this.ignoreShared = caps.includes('x-ignore-shared')
        if (caps.includes('mapped-ram')) {
          this.startPassthrough(this.base + pos, 'unsupported', 'mapped-ram streams are not linear')
          return -1
        }
        return p - pos
      }
      case 'configuration/uuid':
        return end - p < 16 ? 0 : head + 16
      default:
        this.startPassthrough(this.base + pos, 'unsupported', `unknown configuration subsection ${name}`)
        return -1
    }
  }

  private parseTopLevel(buf: Uint8Array, dv: DataView, pos: number, end: number): number {
    const type = buf[pos]!
    const avail = end - pos
    switch (type) {
      case Section.Command: {
        if (avail < 5) return 0
        const cmd = dv.getUint16(pos + 1)
        const len = dv.getUint16(pos + 3)
        if (avail < 5 + len) return 0
        this.stats.sections.commands++
        if (cmd === Command.PostcopyAdvise && len === 16) {
          this.stats.postcopy = true
          // The OR of all block page sizes; block entries carry their own page size only if it differs.
          const summary = dv.getUint32(pos + 5) * 2 ** 32 + dv.getUint32(pos + 9)
          this.postcopyPageSizes = summary !== this.pageSize
        } else if (cmd === Command.PostcopyRamDiscard) {
          this.curBlock = -1 // QEMU resets last_sent_block after sending the discard bitmap
        } else if (cmd === Command.Packaged) {
          if (len !== 4) {
            this.startPassthrough(this.base + pos, 'unsupported', `PACKAGED command with length ${len}`)
            return -1
          }
          // The package holds device state and commands, never RAM pages: copy it whole.
          this.skipLeft = dv.getUint32(pos + 5)
          this.stateAfterSkip = State.TopLevel
          this.state = State.Skip
        }
        return 5 + len
      }
      case Section.Start:
      case Section.Full: {
        if (avail < 6) return 0
        const idLen = buf[pos + 5]!
        const head = 6 + idLen + 8
        if (avail < head) return 0
        const id = dv.getUint32(pos + 1)
        const idstr = latin1.decode(buf.subarray(pos + 6, pos + 6 + idLen))
        const version = dv.getUint32(pos + 6 + idLen + 4)
        if (type === Section.Start && idstr === 'ram' && version === 4 && this.ramSectionId < 0) {
          this.stats.sections.start++
          this.stats.ramSections++
          this.ramSectionId = id
          this.sectionId = id
          this.state = State.BlockListHeader
          return head
        }
        this.startPassthrough(
          this.base + pos,
          'device-state',
          `${type === Section.Full ? 'FULL' : 'START'} section "${idstr}" (id ${id}) cannot be delimited`,
        )
        return -1
      }
      case Section.Part:
      case Section.End: {
        if (avail < 5) return 0
        const id = dv.getUint32(pos + 1)
        if (id !== this.ramSectionId) {
          this.startPassthrough(this.base + pos, 'device-state', `section id ${id} is not RAM`)
          return -1
        }
        if (type === Section.Part) this.stats.sections.part++
        else this.stats.sections.end++
        this.stats.ramSections++
        this.sectionId = id
        this.state = State.RamRecord
        return 5
      }
      case Section.Eof:
        this.startPassthrough(this.base + pos, 'trailer', 'end of stream; the rest is the device description')
        return -1
      default:
        this.startPassthrough(this.base + pos, 'unsupported', `unknown top-level byte 0x${type.toString(16)}`)
        return -1
    }
  }

  private parseBlock(buf: Uint8Array, dv: DataView, pos: number, end: number): number {
    const avail = end - pos
    if (avail < 1) return 0
    const len = buf[pos]!
    let need = 1 + len + 8
    if (avail < need) return 0
    const name = latin1.decode(buf.subarray(pos + 1, pos + 1 + len))
    const usedLength = dv.getUint32(pos + 1 + len) * 2 ** 32 + dv.getUint32(pos + 1 + len + 4)
    if (this.postcopyPageSizes) {
      // The per-block page size is present iff the next be64 is a power of two >= the target page size: the
      // alternatives (a next block's name length, EOS) cannot look like that.
      if (avail < need + 8) return 0
      const hi = dv.getUint32(pos + need)
      const lo = dv.getUint32(pos + need + 4)
      const v = hi * 2 ** 32 + lo
      if (v >= this.pageSize && Number.isInteger(Math.log2(v))) need += 8
    }
    if (this.ignoreShared) need += 8
    if (avail < need) return 0
    if (usedLength > this.blockTotalLeft || usedLength % this.pageSize !== 0) {
      this.startPassthrough(
        this.base + pos,
        'unsupported',
        `RAM block "${name}" length does not fit the total`,
      )
      return -1
    }
    const id = this.blockId(name)
    this.stats.blocks.push({ id, name, usedLength })
    this.blockTotalLeft -= usedLength
    if (this.blockTotalLeft === 0) this.state = State.RamRecord
    return need
  }

  private blockId(name: string): number {
    let id = this.blockIds.get(name)
    if (id === undefined) {
      id = this.blockNames.length
      this.blockIds.set(name, id)
      this.blockNames.push(name)
    }
    return id
  }

  private parseRamRecord(buf: Uint8Array, dv: DataView, pos: number, end: number): number {
    const avail = end - pos
    if (avail < 8) return 0
    const hi = dv.getUint32(pos)
    const lo = dv.getUint32(pos + 4)
    const flags = lo & (this.pageSize - 1)
    if (flags === RamFlag.Eos) {
      this.state = State.Footer
      return 8
    }
    if (flags === RamFlag.MultifdFlush) return 8
    const kindFlag = flags & ~RamFlag.Continue
    let kind: PageKind
    switch (kindFlag) {
      case RamFlag.Zero:
        kind = 'zero'
        break
      case RamFlag.Page:
        kind = 'page'
        break
      case RamFlag.Xbzrle:
        kind = 'xbzrle'
        break
      case RamFlag.CompressPage:
        kind = 'compress'
        break
      default:
        this.startPassthrough(this.base + pos, 'unsupported', `RAM record flags 0x${flags.toString(16)}`)
        return -1
    }
    let p = pos + 8
    let named = false
    if (flags & RamFlag.Continue) {
      if (this.curBlock < 0) {
        this.startPassthrough(this.base + pos, 'unsupported', 'CONTINUE record with no block named before')
        return -1
      }
    } else {
      if (avail < 9) return 0
      const len = buf[p]!
      if (avail < 9 + len) return 0
      this.curBlock = this.blockId(latin1.decode(buf.subarray(p + 1, p + 1 + len)))
      p += 1 + len
      named = true
    }
    const headerEnd = p
    let bodyLen: number
    switch (kind) {
      case 'zero':
        bodyLen = 1
        break
      case 'page':
        bodyLen = this.pageSize
        break
      case 'xbzrle': {
        if (end - p < 3) return 0
        const n = dv.getUint16(p + 1)
        if (buf[p] !== XBZRLE_ENCODING_FLAG || n > this.pageSize) {
          this.startPassthrough(this.base + pos, 'unsupported', 'malformed XBZRLE record header')
          return -1
        }
        bodyLen = 3 + n
        break
      }
      case 'compress': {
        if (end - p < 4) return 0
        const n = dv.getUint32(p)
        if (n > this.pageSize + (this.pageSize >> 10) + 64) {
          // zlib's compressBound(page): QEMU's loader rejects anything larger
          this.startPassthrough(this.base + pos, 'unsupported', `compressed page of ${n} bytes`)
          return -1
        }
        bodyLen = 4 + n
        break
      }
    }
    if (end - p < bodyLen) return 0
    const offset = hi * 2 ** 32 + (lo - flags)
    const rec = this.record
    rec.kind = kind
    rec.blockId = this.curBlock
    rec.blockName = this.blockNames[this.curBlock]!
    rec.offset = offset
    rec.pageIndex = Math.floor(offset / this.pageSize)
    rec.header = buf.subarray(pos, headerEnd)
    rec.body = buf.subarray(headerEnd, p + bodyLen)
    this.countPage(rec, named)
    this.flushVerbatim(buf, pos)
    this.handler.page(rec)
    this.vStart = p + bodyLen
    return p + bodyLen - pos
  }

  private countPage(rec: PageRecord, named: boolean): void {
    this.stats.pages[rec.kind]++
    if (named) this.stats.namedRecords++
    const block = this.stats.blocks[rec.blockId]
    if (!block) return
    let seen = this.sentBefore.get(rec.blockId)
    if (!seen) {
      seen = new Uint8Array(Math.ceil(block.usedLength / this.pageSize / 8))
      this.sentBefore.set(rec.blockId, seen)
    }
    const i = rec.pageIndex
    const byte = i >> 3
    if (byte >= seen.length) return
    const bit = 1 << (i & 7)
    if (seen[byte]! & bit) this.stats.resentPages++
    else seen[byte]! |= bit
  }

  /** Page shift for callers that key by page index. */
  get targetPageShift(): number {
    return this.pageShift
  }
}
