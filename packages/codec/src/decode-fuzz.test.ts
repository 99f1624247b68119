import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { XbzrleDecodeError } from './errors.js'
import { getKernel } from './kernel.js'
import type { XbzrleKernel } from './kernel-types.js'
import { BoundWasmKernel } from './kernel-wasm.js'
import { arbPagePair, refDecode } from './xbzrle-ref.testutil.js'

const GUARD = 64

/** Valid deltas with random byte edits, truncations and appended junk: most become invalid in varied ways. */
const arbDelta: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc
    .tuple(
      arbPagePair,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.option(fc.nat()),
      fc.uint8Array({ maxLength: 3 }),
    )
    .map(([{ old, cur }, edits, cut, tail]) => {
      const dst = new Uint8Array(cur.length * 2 + 8)
      const n = getKernel('ts').encode(old, cur, dst, 'canonical')
      let d = dst.slice(0, n)
      for (const [at, v] of edits) if (d.length > 0) d[at % d.length] = v
      if (cut !== null && d.length > 0) d = d.slice(0, cut % d.length)
      const out = new Uint8Array(d.length + tail.length)
      out.set(d)
      out.set(tail, d.length)
      return out
    }),
)

function check(kernel: XbzrleKernel, big: Uint8Array, pageLen: number, delta: Uint8Array, seed: number) {
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + seed) & 0xff
  const before = big.slice()
  const page = big.subarray(GUARD, GUARD + pageLen)
  const want = refDecode(delta, page)
  let got: number | XbzrleDecodeError
  try {
    got = kernel.decode(delta, page)
  } catch (e) {
    if (!(e instanceof XbzrleDecodeError)) throw e
    got = e
  }
  // Guard bytes on both sides are never touched.
  expect(big.subarray(0, GUARD)).toEqual(before.subarray(0, GUARD))
  expect(big.subarray(GUARD + pageLen)).toEqual(before.subarray(GUARD + pageLen))
  if (want === -1) {
    expect(got).toBeInstanceOf(XbzrleDecodeError)
    // Never half-applied: the page is exactly as before.
    expect(page).toEqual(before.subarray(GUARD, GUARD + pageLen))
  } else {
    expect(got).toBe(want.end)
    expect(page).toEqual(want.page)
  }
}

describe.each(['wasm', 'ts'] as const)('%s decoder fuzz', (k) => {
  const kernel = getKernel(k)

  it('random and mutated deltas: typed error or the exact QEMU result, guards intact', () => {
    fc.assert(
      fc.property(arbDelta, fc.integer({ min: 1, max: 64 }), fc.nat(255), (delta, words, seed) => {
        const pageLen = words * 8
        check(kernel, new Uint8Array(pageLen + 2 * GUARD), pageLen, delta, seed)
      }),
      { numRuns: 3000 },
    )
  })
})

describe('bound wasm decoder fuzz (page inside the wasm memory)', () => {
  it('never writes outside the page in wasm memory', () => {
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 1 })
    const kernel = new BoundWasmKernel(mem)
    const all = new Uint8Array(mem.buffer)
    fc.assert(
      fc.property(arbDelta, fc.integer({ min: 1, max: 64 }), fc.nat(255), (d, words, seed) => {
        const pageLen = words * 8
        // Put the delta in memory too so the no-copy path is the one exercised.
        const delta = all.subarray(32768, 32768 + d.length)
        delta.set(d)
        check(kernel, all.subarray(0, pageLen + 2 * GUARD), pageLen, delta, seed)
      }),
      { numRuns: 2000 },
    )
  })
})
