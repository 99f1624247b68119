// Test-only helpers for base-image tests: save-like images of a simulated VM, changed copies, and encode/decode
// against a base through files (a base is always a file).
import { Buffer } from 'node:buffer'
import { XbzrleDecoder } from '../filter/decoder.js'
import { type EncoderOptions, XbzrleEncoder } from '../filter/encoder.js'
import { buildSaveImagePrefix } from '../libvirt/save-image.js'
import { QemuStreamReader } from '../qemu/stream-reader.js'
import { SimulatedGuest } from '../simulate/simulated-guest.js'
import { type DecoderBase, prepareDecoderBase, prepareEncoderBase } from './base-image.js'
import { peekStreamHeader } from './stream-header.js'

/** One pass over all of RAM, like `virsh save` of a paused guest. */
export function saveLikeImage(seed: number, memMiB = 4): Buffer {
  return Buffer.concat([...new SimulatedGuest({ memMiB, passes: 0, seed }).stream()])
}

/**
 * A copy of a QEMU stream with `fraction` of its PAGE records changed in a few bytes each (a guest that kept
 * running between two saves): same layout, same length.
 */
export function changedImage(image: Uint8Array, fraction: number, seed: number): Buffer {
  const out = Buffer.from(image)
  let pos = 0
  let s = seed >>> 0 || 1
  const rnd = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s / 2 ** 32
  }
  const reader = new QemuStreamReader({
    verbatim: (b) => {
      pos += b.length
    },
    page: (r) => {
      const body = pos + r.header.length
      if (r.kind === 'page' && rnd() < fraction) {
        for (let k = 0; k < 4; k++) out[body + Math.floor(rnd() * r.body.length)] ^= 0x5a
      }
      pos = body + r.body.length
    },
  })
  reader.push(image)
  reader.finish()
  return out
}

/** A libvirt save image around a QEMU stream, naming the domain by UUID. */
export function asSaveImage(stream: Uint8Array, uuid = '11111111-2222-3333-4444-555555555555'): Buffer {
  const xml = `<domain type="qemu"><name>vm</name><uuid>${uuid}</uuid></domain>`
  return Buffer.concat([buildSaveImagePrefix(xml, { padding: 4096 }), stream])
}

export async function encodeWithBase(
  input: Uint8Array,
  chain: string[] | undefined,
  o: EncoderOptions = {},
): Promise<Buffer> {
  const base = chain ? await prepareEncoderBase(chain, { cacheBytes: o.cacheBytes }) : undefined
  const out: Uint8Array[] = []
  const enc = new XbzrleEncoder((c) => out.push(c), { ...o, base })
  enc.push(input)
  enc.finish()
  return Buffer.concat(out)
}

/** Decodes; `outputs` counts the chunks released (must stay 0 when the base is refused). */
export async function decodeWithBase(
  encoded: Uint8Array,
  chain: string[],
  outputs: Uint8Array[] = [],
): Promise<Buffer> {
  const it = [encoded][Symbol.iterator]()
  const peeked = await peekStreamHeader({ next: async () => it.next() })
  let base: DecoderBase | undefined
  if (chain.length > 0) base = await prepareDecoderBase(chain, peeked.header)
  const dec = new XbzrleDecoder((c) => outputs.push(c), { base })
  dec.push(encoded)
  dec.finish()
  return Buffer.concat(outputs)
}
