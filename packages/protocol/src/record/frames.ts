import {
  DERIVED_HDR_BYTES,
  FrameKind,
  HDR_RAW,
  type Limits,
  MAX_BLOCK_ID,
  MAX_PAGE_INDEX,
} from '../v1/constants.js'
import { derivableFlags, unzigzag, writeDerivedHdr } from '../v1/page-key.js'
import type { Frame, PageCounts } from '../v1/types.js'
import type { Cursor } from '../wire/cursor.js'

/** Largest block of reconstructed (derived) page-record headers allocated at once. */
const MAX_HDR_ARENA = 64 * 1024
const EMPTY = new Uint8Array(0)

/** The frames of a batch body and what they add up to (SPEC.md §5.2, §5.3). */
export interface ParsedFrames {
  frames: Frame[]
  counts: PageCounts
  /** Sum of the frames' output lengths. */
  out: number
}

/**
 * Parses the frames from `c` to its end (what follows outputCrc in a plain batch of any version, or a v2 batch's
 * decompressed frames) with every v1 frame rule and error. Byte fields are views into `c.buf` (derived headers:
 * into scratch).
 */
export function parseFrames(c: Cursor, pageSize: number, lim: Limits, ctx: string): ParsedFrames {
  const frames: Frame[] = []
  const counts: PageCounts = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0 }
  let out = 0
  let prev = -1 // pageIndex of the previous keyed frame of this batch (SPEC.md §5.2)
  // Derived headers are rebuilt into blocks owned by this batch: every frame gets its own 8 bytes, so a
  // frame's hdr stays valid however long the caller keeps it (frames are all parsed before the batch is out).
  let arena = EMPTY
  let arenaPos = 0
  while (c.remaining > 0) {
    const frameAt = c.offset
    const kind = c.u8('frame kind')
    if (kind === FrameKind.VERBATIM) {
      const lenAt = c.offset
      const n = c.varint('verbatim length')
      if (n > lim.maxVerbatimBytes)
        throw c.error('LIMIT', `${ctx}: verbatim frame of ${n} bytes (max ${lim.maxVerbatimBytes})`, lenAt)
      frames.push({ kind: 'verbatim', bytes: c.bytes(n, 'verbatim bytes') })
      out += n
      continue
    }
    if (kind === FrameKind.RESET) {
      frames.push({ kind: 'reset' })
      continue
    }
    if (kind < FrameKind.PAGE_FULL || kind > FrameKind.INVALIDATE)
      c.fail(`unknown frame kind 0x${kind.toString(16).padStart(2, '0')}`, frameAt)
    const keyAt = c.offset
    const blockId = c.varint('blockId')
    const indexAt = c.offset
    const delta = unzigzag(c.varint('pageIndex delta'))
    const pageIndex = prev + 1 + delta
    if (blockId > MAX_BLOCK_ID)
      throw c.error('LIMIT', `${ctx}: page key (${blockId}, ${pageIndex}) out of range`, keyAt)
    if (pageIndex < 0) c.fail(`pageIndex delta ${delta} from ${prev + 1} goes below 0`, indexAt)
    if (pageIndex > MAX_PAGE_INDEX)
      throw c.error('LIMIT', `${ctx}: page key (${blockId}, ${pageIndex}) out of range`, keyAt)
    prev = pageIndex
    if (kind === FrameKind.INVALIDATE) {
      frames.push({ kind: 'invalidate', blockId, pageIndex })
      continue
    }
    const formAt = c.offset
    const form = c.varint('hdr form')
    let hdr: Uint8Array
    if (form === HDR_RAW) {
      const lenAt = c.offset
      const len = c.varint('hdr length')
      if (len > lim.maxHdrBytes)
        throw c.error('LIMIT', `${ctx}: page record header of ${len} bytes (max ${lim.maxHdrBytes})`, lenAt)
      hdr = c.bytes(len, 'hdr')
      const flags = derivableFlags(hdr, pageIndex, pageSize)
      if (flags >= 0)
        c.fail(`raw page record header has the derived form (must be written as h = ${flags + 1})`, formAt)
    } else {
      const flags = form - 1
      if (flags >= pageSize) c.fail(`derived header flags ${flags} not below pageSize ${pageSize}`, formAt)
      if (arenaPos + DERIVED_HDR_BYTES > arena.length) {
        // At most one derived header per 4 remaining wire bytes (kind, blockId, pageIndex, h).
        arena = new Uint8Array(Math.min(MAX_HDR_ARENA, DERIVED_HDR_BYTES * (1 + (c.remaining >> 2))))
        arenaPos = 0
      }
      writeDerivedHdr(arena, arenaPos, pageIndex, pageSize, flags)
      hdr = arena.subarray(arenaPos, arenaPos + DERIVED_HDR_BYTES)
      arenaPos += DERIVED_HDR_BYTES
    }
    const hdrLen = hdr.length
    switch (kind) {
      case FrameKind.PAGE_FULL:
        frames.push({ kind: 'full', blockId, pageIndex, hdr, page: c.bytes(pageSize, 'page') })
        out += hdrLen + pageSize
        counts.full++
        break
      case FrameKind.PAGE_DELTA: {
        const lenAt = c.offset
        const n = c.varint('delta length')
        if (n > pageSize)
          throw c.error('LIMIT', `${ctx}: delta of ${n} bytes (max pageSize ${pageSize})`, lenAt)
        frames.push({ kind: 'delta', blockId, pageIndex, hdr, delta: c.bytes(n, 'delta') })
        out += hdrLen + pageSize
        counts.delta++
        break
      }
      case FrameKind.PAGE_SAME:
        frames.push({ kind: 'same', blockId, pageIndex, hdr })
        out += hdrLen + pageSize
        counts.same++
        break
      case FrameKind.PAGE_ZERO:
        frames.push({ kind: 'zero', blockId, pageIndex, hdr, fill: c.u8('fill') })
        out += hdrLen + 1
        counts.zero++
        break
      default: {
        // PAGE_FOREIGN
        const lenAt = c.offset
        const n = c.varint('foreign body length')
        if (n > pageSize + 3)
          throw c.error('LIMIT', `${ctx}: foreign body of ${n} bytes (max pageSize + 3)`, lenAt)
        const body = c.bytes(n, 'foreign body')
        const why = foreignBodyProblem(body, pageSize)
        if (why !== undefined) c.fail(`foreign XBZRLE body: ${why}`, lenAt)
        frames.push({ kind: 'foreign', blockId, pageIndex, hdr, body })
        out += hdrLen + n
        counts.foreign++
      }
    }
  }
  return { frames, counts, out }
}

/** Why `body` is not a valid QEMU XBZRLE record body, or undefined. */
export function foreignBodyProblem(body: Uint8Array, pageSize: number): string | undefined {
  if (body.length < 3) return `${body.length} bytes, need at least 3`
  if (body[0] !== 0x01) return `encoding flag 0x${body[0]!.toString(16)} (must be 0x01)`
  const n = (body[1]! << 8) | body[2]!
  if (n > pageSize) return `length ${n} exceeds pageSize ${pageSize}`
  if (n !== body.length - 3) return `length field ${n} does not match ${body.length - 3} data bytes`
  return undefined
}
