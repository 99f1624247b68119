// Test-only: encode then decode in callback mode, each side fed in pseudo-random chunks (randomChunks).
import { Buffer } from 'node:buffer'
import { randomChunks } from '../test-fixtures.js'
import { XbzrleDecoder } from './decoder.js'
import { type EncoderOptions, XbzrleEncoder } from './encoder.js'

/** Chunking of each side: the seed and the largest chunk of randomChunks. */
export interface RoundTripChunks {
  encode: [seed: number, max: number]
  decode: [seed: number, max: number]
}

export function roundTrip(
  data: Uint8Array,
  options: EncoderOptions = {},
  chunks: RoundTripChunks = { encode: [17, 1 << 20], decode: [23, 1 << 20] },
) {
  const enc: Uint8Array[] = []
  const e = new XbzrleEncoder((c) => enc.push(c), options)
  for (const c of randomChunks(data, ...chunks.encode)) e.push(c)
  e.finish()
  const encoded = Buffer.concat(enc)
  const dec: Uint8Array[] = []
  const d = new XbzrleDecoder((c) => dec.push(c))
  for (const c of randomChunks(encoded, ...chunks.decode)) d.push(c)
  d.finish()
  return { encoded, decoded: Buffer.concat(dec), stats: e.stats }
}
