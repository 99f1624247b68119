/**
 * The "ideal" XBZRLE row: an in-process model with an unbounded cache (a Map holding every page ever sent) that
 * applies the same canonical XBZRLE delta as the filter. It reads the stream from its file in 4 MiB chunks (the
 * stream is never held in memory; the model holds one copy of each distinct page, i.e. at most the guest's RAM).
 *
 * Two sizes come out:
 * - `payload`: verbatim bytes + full pages + delta bytes + fill bytes + QEMU's own records, with no framing at all.
 *   A lower bound for any XBZRLE coder with the same delta: what is left once cache misses and framing are gone.
 * - `framed`: the same frames as format v1 would carry them (kind byte, key, header code, lengths), but without
 *   batch/record envelopes and with the unbounded cache. The filter minus `framed` is the cache + envelope loss;
 *   `framed` minus `payload` is the per-frame cost.
 */
import { createReadStream } from 'node:fs'
import { QemuStreamReader } from '@xbzrle/adapter-libvirt'
import { decode, encode } from '@xbzrle/codec'
import { MiB } from './util.js'

export interface IdealResult {
  input: number
  payload: number
  framed: number
  frames: { full: number; delta: number; same: number; zero: number; foreign: number; other: number }
  cpuS: number
}

const varintLen = (n: number): number =>
  n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5

export async function idealXbzrle(path: string, pageSize = 4096): Promise<IdealResult> {
  const cpu0 = process.cpuUsage()
  const pages = new Map<number, Uint8Array>()
  const dst = new Uint8Array(pageSize - 1)
  const frames = { full: 0, delta: 0, same: 0, zero: 0, foreign: 0, other: 0 }
  let payload = 0
  let framed = 0
  let prevIndex = -1
  let input = 0
  const keyBytes = (blockId: number, pageIndex: number): number => {
    const d = pageIndex - (prevIndex + 1)
    prevIndex = pageIndex
    return varintLen(blockId) + varintLen(d >= 0 ? 2 * d : -2 * d - 1)
  }
  const reader = new QemuStreamReader(
    {
      verbatim(b) {
        payload += b.length
        framed += 1 + varintLen(b.length) + b.length
      },
      page(r) {
        const key = r.blockId * 2 ** 32 + r.pageIndex
        const hdr = r.header.length === 8 ? 1 : 2 + r.header.length
        const k = 1 + keyBytes(r.blockId, r.pageIndex) + hdr
        let old = pages.get(key)
        switch (r.kind) {
          case 'page': {
            if (r.body.length !== pageSize) break
            if (!old) {
              pages.set(key, r.body.slice())
              frames.full++
              payload += pageSize
              framed += k + pageSize
              return
            }
            const n = encode(old, r.body, dst, 'canonical')
            old.set(r.body)
            if (n === 0) {
              frames.same++
              framed += k
            } else if (n < 0) {
              frames.full++
              payload += pageSize
              framed += k + pageSize
            } else {
              frames.delta++
              payload += n
              framed += k + varintLen(n) + n
            }
            return
          }
          case 'zero': {
            if (!old) {
              old = new Uint8Array(pageSize)
              pages.set(key, old)
            }
            old.fill(r.body[0]!)
            frames.zero++
            payload += 1
            framed += k + 1
            return
          }
          case 'xbzrle': {
            if (old) {
              try {
                decode(r.body.subarray(3), old)
              } catch {
                pages.delete(key)
              }
            }
            frames.foreign++
            payload += r.body.length
            framed += k + varintLen(r.body.length) + r.body.length
            return
          }
          case 'compress':
            break
        }
        pages.delete(key)
        frames.other++
        payload += r.header.length + r.body.length
        framed += 1 + varintLen(r.header.length + r.body.length) + r.header.length + r.body.length
      },
    },
    { targetPageSize: pageSize },
  )
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) {
    const c = chunk as Buffer
    input += c.length
    reader.push(c)
  }
  reader.finish()
  const cpu = process.cpuUsage(cpu0)
  return { input, payload, framed, frames, cpuS: (cpu.user + cpu.system) / 1e6 }
}
