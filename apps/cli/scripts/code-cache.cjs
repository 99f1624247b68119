// Writes V8's code cache for a CommonJS bundle: `node scripts/code-cache.cjs [--warm-up] dist/fast.cjs` makes
// dist/fast.cjs.v8cache, which bin/xbzrle.js hands to V8 when it loads the file (requireWithCodeCache there).
// Layout: cacheHeader (crc32 and length of the file, crc32 of the data), then V8's cached data.
//
// With --warm-up (the fast bundle), before it saves the cache, it runs a small simulated migration stream through
// the bundle's own encoder and decoder (default settings, format v1, and pages copied unparsed as the libvirt
// helper's save does) and checks that the stream comes back: the cache then also holds the bytecode of the
// functions a real run calls, which node would otherwise compile lazily during the first batches (the whole
// `xbzrle -c` of a 1 MB stream: ~19 ms less, bench/profiles/hot-path.md). The cache holds compiled code only,
// no state of this run. V8 rejects a cache from another node version or other flags at load, and the file then
// compiles as usual.
'use strict'
const { readFileSync, writeFileSync } = require('node:fs')
const { resolve } = require('node:path')
const { cacheHeader, runCommonJs } = require('../bin/xbzrle.js')

async function warmUp(fast) {
  const { SimulatedGuest } = await import('@xbzrle/adapter-libvirt')
  for (const options of [{}, { formatVersion: 1 }, { pages: false }]) {
    const input = Buffer.concat([
      ...new SimulatedGuest({ memMiB: 4, passes: 2, workload: 'sparse' }).stream(),
    ])
    const encoded = []
    const encoder = new fast.XbzrleEncoder((c) => encoded.push(Buffer.from(c)), options)
    for (let at = 0; at < input.length; at += 1 << 20) encoder.push(input.subarray(at, at + (1 << 20)))
    encoder.finish()
    await encoder.settled()
    const decoded = []
    const decoder = new fast.XbzrleDecoder((c) => decoded.push(Buffer.from(c)), {})
    for (const c of encoded) decoder.push(c)
    decoder.finish() // the decoder writes synchronously: everything is out
    if (!Buffer.concat(decoded).equals(input))
      throw new Error(`code-cache warm-up: ${JSON.stringify(options)} did not round-trip`)
  }
}

async function main() {
  const args = process.argv.slice(2)
  const warm = args[0] === '--warm-up'
  const file = resolve(args[warm ? 1 : 0])
  const source = readFileSync(file)
  const { script, exports } = runCommonJs(file, source, undefined)
  if (warm) await warmUp(exports)
  const data = script.createCachedData()
  writeFileSync(`${file}.v8cache`, Buffer.concat([cacheHeader(source, data), data]))
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
