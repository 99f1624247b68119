import { RamFlag, Section } from '../qemu/format.js'

/**
 * A simulated guest that produces a QEMU 7.2-format precopy migration stream without QEMU: the same items and
 * layout as `migrate "exec:cat > f"` of a pc-i440fx-7.2 machine (header, configuration, RAM START with the
 * block list, RAM PART passes with PAGE/ZERO records and CONTINUE, RAM END, FULL device sections, EOF and the
 * VMDESCRIPTION trailer). Between passes the workload re-dirties pages, the way a busy guest makes QEMU
 * re-send them. Used by the demo, tests and benchmarks.
 */
export type Workload = 'sparse' | 'hotset' | 'sweep' | 'text' | 'idle'
export const WORKLOADS: readonly Workload[] = ['sparse', 'hotset', 'sweep', 'text', 'idle']

export interface SimulatedGuestOptions {
  /** Size of pc.ram in MiB (default 64). */
  memMiB?: number
  workload?: Workload
  /** Dirty passes after the first full pass (default 4). */
  passes?: number
  /** Fraction of pc.ram pages the workload touches per pass (default 0.25). */
  dirtyFraction?: number
  seed?: number
  machine?: string
  /** Pages per RAM PART section, like QEMU's rate-limited iterations (default 4096). */
  pagesPerSection?: number
}

const PAGE = 4096

interface Block {
  name: string
  size: number
  data: Uint8Array
  /** Pages dirtied since they were last sent (bitmap). */
  dirty: Uint8Array
}

class Rng {
  private s: number
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9
  }
  next(): number {
    let s = this.s
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    this.s = s
    return s
  }
  below(n: number): number {
    return this.next() % n
  }
}

const WORDS =
  'the quick brown fox jumps over lazy dog migration page cache guest kernel memory record value '.split(' ')

/** Fills a page with content that looks like a guest's: zero, text, code-like, struct-like or random pages. */
function fillPage(page: Uint8Array, rng: Rng): void {
  const kind = rng.below(10)
  if (kind < 3) return // zero page (~30%, typical of a fresh guest)
  if (kind < 5) {
    let p = 0
    while (p < PAGE) {
      const w = WORDS[rng.below(WORDS.length)]!
      for (let i = 0; i < w.length && p < PAGE; i++) page[p++] = w.charCodeAt(i)
      if (p < PAGE) page[p++] = rng.below(8) === 0 ? 10 : 32
    }
  } else if (kind < 7) {
    // struct-like: 64-byte records with pointers, counters and flags
    for (let r = 0; r < PAGE; r += 64) {
      const base = 0xc0000000 + rng.below(1 << 20) * 64
      page[r] = base & 0xff
      page[r + 1] = (base >>> 8) & 0xff
      page[r + 2] = (base >>> 16) & 0xff
      page[r + 3] = base >>> 24
      page[r + 8] = rng.below(256)
      page[r + 16] = rng.below(4)
    }
  } else if (kind < 9) {
    // code-like: a small alphabet of opcodes
    const ops = [0x48, 0x89, 0x8b, 0xe8, 0xc3, 0x55, 0x5d, 0x0f, 0x85, 0x74, 0x31, 0xc0]
    for (let i = 0; i < PAGE; i++) page[i] = rng.below(3) === 0 ? rng.below(256) : ops[rng.below(ops.length)]!
  } else {
    for (let i = 0; i < PAGE; i++) page[i] = rng.below(256)
  }
}

/** A growable output buffer flushed in ~1 MiB chunks. */
class Out {
  private buf = new Uint8Array(1 << 21)
  private dv = new DataView(this.buf.buffer)
  len = 0
  constructor(private readonly chunkBytes = 1 << 20) {}
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
    this.dv = new DataView(next.buffer)
  }
  u8(v: number): void {
    this.ensure(1)
    this.buf[this.len++] = v
  }
  be16(v: number): void {
    this.ensure(2)
    this.dv.setUint16(this.len, v)
    this.len += 2
  }
  be32(v: number): void {
    this.ensure(4)
    this.dv.setUint32(this.len, v)
    this.len += 4
  }
  be64(v: number): void {
    this.be32(Math.floor(v / 2 ** 32))
    this.be32(v >>> 0)
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length)
    this.buf.set(b, this.len)
    this.len += b.length
  }
  counted(s: string): void {
    this.u8(s.length)
    for (let i = 0; i < s.length; i++) this.u8(s.charCodeAt(i))
  }
  full(): boolean {
    return this.len >= this.chunkBytes
  }
  take(): Uint8Array {
    const chunk = this.buf.slice(0, this.len)
    this.len = 0
    return chunk
  }
}

const RAM_SECTION_ID = 2

/** The device sections of a pc machine, with plausible sizes (their content is opaque to every reader). */
const DEVICES: Array<[string, number, number]> = [
  ['timer', 0, 24],
  ['cpu_common', 4, 9],
  ['cpu', 5, 1700],
  ['apic', 7, 120],
  ['fw_cfg', 9, 8],
  ['0000:00:00.0/I440FX', 12, 330],
  ['0000:00:01.0/PIIX3', 15, 330],
  ['i8259', 16, 30],
  ['ioapic', 18, 200],
  ['0000:00:02.0/vga', 19, 380],
  ['mc146818rtc', 21, 140],
  ['i8254', 22, 100],
  ['globalstate', 43, 10],
]

export class SimulatedGuest {
  readonly options: Required<SimulatedGuestOptions>
  private readonly blocks: Block[]
  private readonly rng: Rng
  private readonly out = new Out()
  private lastBlock = -1
  /** Page records emitted, by kind (for reports; tests check the reader's own counts instead). */
  readonly emitted = { page: 0, zero: 0 }

  constructor(options: SimulatedGuestOptions = {}) {
    this.options = {
      memMiB: options.memMiB ?? 64,
      workload: options.workload ?? 'sparse',
      passes: options.passes ?? 4,
      dirtyFraction: options.dirtyFraction ?? 0.25,
      seed: options.seed ?? 1,
      machine: options.machine ?? 'pc-i440fx-7.2',
      pagesPerSection: options.pagesPerSection ?? 4096,
    }
    if (!Number.isInteger(this.options.memMiB) || this.options.memMiB < 1 || this.options.memMiB > 4096) {
      throw new RangeError(`memMiB must be an integer in 1..4096, got ${this.options.memMiB}`)
    }
    this.rng = new Rng(this.options.seed)
    const mk = (name: string, size: number, fill: 'ram' | 'rom' | 'zero'): Block => {
      const data = new Uint8Array(size)
      if (fill !== 'zero') {
        for (let p = 0; p < size; p += PAGE) {
          if (fill === 'ram') fillPage(data.subarray(p, p + PAGE), this.rng)
          else for (let i = p; i < p + PAGE; i++) data[i] = this.rng.below(256)
        }
      }
      return { name, size, data, dirty: new Uint8Array(Math.ceil(size / PAGE / 8)).fill(0xff) }
    }
    // The block list of QEMU 7.2's pc machine, in QEMU's order.
    this.blocks = [
      mk('pc.ram', this.options.memMiB << 20, 'ram'),
      mk('0000:00:02.0/vga.vram', 16 << 20, 'zero'),
      mk('/rom@etc/acpi/tables', 0x20000, 'rom'),
      mk('pc.bios', 0x40000, 'rom'),
      mk('pc.rom', 0x20000, 'rom'),
      mk('0000:00:02.0/vga.rom', 0x10000, 'rom'),
      mk('/rom@etc/table-loader', 0x1000, 'rom'),
      mk('/rom@etc/acpi/rsdp', 0x1000, 'rom'),
    ]
  }

  get ramBytes(): number {
    return this.blocks.reduce((s, b) => s + b.size, 0)
  }

  /** The whole migration stream, in chunks of about 1 MiB. */
  *stream(): Generator<Uint8Array> {
    const o = this.out
    o.be32(0x5145564d)
    o.be32(3)
    o.u8(Section.Configuration)
    o.be32(this.options.machine.length)
    for (let i = 0; i < this.options.machine.length; i++) o.u8(this.options.machine.charCodeAt(i))
    this.sectionHeader(Section.Start, RAM_SECTION_ID, 'ram', 0, 4)
    o.be64(this.ramBytes + RamFlag.MemSize)
    for (const b of this.blocks) {
      o.counted(b.name)
      o.be64(b.size)
    }
    o.be64(RamFlag.Eos)
    this.footer(RAM_SECTION_ID)
    // Pass 0 sends everything; each later pass sends what the workload dirtied meanwhile.
    for (let pass = 0; pass <= this.options.passes; pass++) {
      if (pass > 0) this.dirty(pass)
      yield* this.sendDirty(Section.Part, pass === this.options.passes)
    }
    for (const [name, id, size] of DEVICES) {
      this.sectionHeader(Section.Full, id, name, 0, 1)
      for (let i = 0; i < size; i++) o.u8(this.rng.below(4) === 0 ? this.rng.below(256) : 0)
      this.footer(id)
    }
    o.u8(Section.Eof)
    const json = JSON.stringify({
      page_size: PAGE,
      devices: DEVICES.map(([name, , size]) => ({
        name,
        instance_id: 0,
        vmsd_name: name,
        version: 1,
        fields: [{ name: 'data', type: 'buffer', size }],
      })),
    })
    o.u8(Section.VmDescription)
    o.be32(json.length)
    for (let i = 0; i < json.length; i++) o.u8(json.charCodeAt(i))
    if (o.len > 0) yield o.take()
  }

  private sectionHeader(type: number, id: number, idstr: string, instance: number, version: number): void {
    this.out.u8(type)
    this.out.be32(id)
    this.out.counted(idstr)
    this.out.be32(instance)
    this.out.be32(version)
  }

  private footer(id: number): void {
    this.out.u8(Section.Footer)
    this.out.be32(id)
  }

  /** Sends every dirty page in PART sections of `pagesPerSection` pages; the last pass ends with an END. */
  private *sendDirty(_type: Section, last: boolean): Generator<Uint8Array> {
    const o = this.out
    let inSection = 0
    const open = (type: Section) => {
      o.u8(type)
      o.be32(RAM_SECTION_ID)
    }
    const close = () => {
      o.be64(RamFlag.Eos)
      this.footer(RAM_SECTION_ID)
    }
    open(last ? Section.End : Section.Part)
    for (let bi = 0; bi < this.blocks.length; bi++) {
      const b = this.blocks[bi]!
      const pages = b.size / PAGE
      for (let p = 0; p < pages; p++) {
        if (!(b.dirty[p >> 3]! & (1 << (p & 7)))) continue
        b.dirty[p >> 3]! &= ~(1 << (p & 7))
        if (inSection === this.options.pagesPerSection && !last) {
          close()
          open(Section.Part)
          inSection = 0
        }
        this.pageRecord(bi, p)
        inSection++
        if (o.full()) yield o.take()
      }
    }
    close()
  }

  private pageRecord(bi: number, p: number): void {
    const o = this.out
    const b = this.blocks[bi]!
    const page = b.data.subarray(p * PAGE, (p + 1) * PAGE)
    let zero = true
    for (let i = 0; i < PAGE; i += 8) {
      if (page[i] !== 0 || page[i + 1] !== 0 || page[i + 2] !== 0 || page[i + 3] !== 0) zero = false
      if (page[i + 4] !== 0 || page[i + 5] !== 0 || page[i + 6] !== 0 || page[i + 7] !== 0) zero = false
      if (!zero) break
    }
    const cont = bi === this.lastBlock ? RamFlag.Continue : 0
    o.be64(p * PAGE + (zero ? RamFlag.Zero : RamFlag.Page) + cont)
    if (!cont) {
      o.counted(b.name)
      this.lastBlock = bi
    }
    if (zero) {
      o.u8(0)
      this.emitted.zero++
    } else {
      o.bytes(page)
      this.emitted.page++
    }
  }

  private markDirty(b: Block, page: number): void {
    b.dirty[page >> 3]! |= 1 << (page & 7)
  }

  /** One pass of the workload over pc.ram. */
  private dirty(pass: number): void {
    const ram = this.blocks[0]!
    const pages = ram.size / PAGE
    const n = Math.max(1, Math.floor(pages * this.options.dirtyFraction))
    const rng = this.rng
    switch (this.options.workload) {
      case 'idle':
        return
      case 'sparse':
        // Four random 8-byte words in each touched page: the case XBZRLE is made for.
        for (let k = 0; k < n; k++) {
          const p = rng.below(pages)
          for (let w = 0; w < 4; w++) {
            const at = p * PAGE + rng.below(PAGE / 8) * 8
            for (let i = 0; i < 8; i++) ram.data[at + i] = rng.below(256)
          }
          this.markDirty(ram, p)
        }
        return
      case 'hotset': {
        // A hot set (1/8 of the touched pages) has its counters bumped every pass.
        const hot = Math.max(1, n >> 3)
        for (let p = 0; p < hot; p++) {
          const page = (p * 7919) % pages
          for (let c = 0; c < 16; c++) ram.data[page * PAGE + c * 256]! += pass
          this.markDirty(ram, page)
        }
        return
      }
      case 'sweep':
        // One byte per page, sweeping through memory.
        for (let k = 0; k < n; k++) {
          const p = (pass * n + k) % pages
          ram.data[p * PAGE + ((pass * 61) % PAGE)]! ^= 0x5a
          this.markDirty(ram, p)
        }
        return
      case 'text':
        // Database-like: rewrite a 40-byte ASCII field of a few 128-byte records in each touched page.
        for (let k = 0; k < n; k++) {
          const p = rng.below(pages)
          for (let r = 0; r < 3; r++) {
            const at = p * PAGE + rng.below(PAGE / 128) * 128
            const word = WORDS[rng.below(WORDS.length)]!
            for (let i = 0; i < 40; i++) ram.data[at + i] = word.charCodeAt(i % word.length)
          }
          this.markDirty(ram, p)
        }
        return
    }
  }
}
