#!/usr/bin/env node
// Thin launcher, CommonJS (bin/package.json): the CLI always runs built JavaScript, never TypeScript on the fly.
// It runs the bundles made by scripts/bundle.mjs because libvirt and QEMU start us once per save, restore and
// migration, and loading hundreds of separate modules cost more start-up time than the work on a small image:
// - dist/fast.cjs, one CommonJS file, for `xbzrle -c`, `xbzrle -dc` and the libvirt helper form (src/fast.ts).
//   Their first byte is on QEMU's and libvirt's critical path, and require() of one file starts faster than
//   node's ES module loader (~15 ms here);
// - dist/xbzrle.mjs and its chunks for everything else.
// dist/fast.js and dist/index.js are the same programs unbundled (a build without the bundle step).
'use strict'

/** Whether `e` says that `file` itself is missing (not something it imports: that is a broken install). */
const missing = (e, file) => /^Cannot find module '[^']*'/.exec(String(e?.message))?.[0].endsWith(`${file}'`)

function fast() {
  try {
    return requireWithCodeCache(require.resolve('../dist/fast.cjs'))?.exports ?? require('../dist/fast.cjs')
  } catch (e) {
    if (!missing(e, 'fast.cjs')) throw e
    return undefined
  }
}

/**
 * Loads a CommonJS file as require() would, with V8's code cache that scripts/code-cache.cjs wrote next to it at
 * build time (`FILE.v8cache`: cacheHeader, then the cache): compiling dist/fast.cjs took ~8 ms of each start. V8
 * itself checks only the source's length, so a CRC ties the cache to these exact bytes, and another guards the
 * cache's own bytes (a release V8 does not checksum them). V8 rejects a cache of another node version or other
 * flags, and the file is compiled as usual (`cacheRejected`). undefined when there is no intact cache for these
 * bytes (the caller then require()s the file).
 */
function requireWithCodeCache(file) {
  const { readFileSync } = require('node:fs')
  let cache
  try {
    cache = readFileSync(`${file}.v8cache`)
  } catch {
    return undefined
  }
  const source = readFileSync(file)
  const data = cache.subarray(CACHE_HEADER_BYTES)
  if (
    cache.length < CACHE_HEADER_BYTES ||
    !cacheHeader(source, data).equals(cache.subarray(0, CACHE_HEADER_BYTES))
  )
    return undefined
  const { script, exports } = runCommonJs(file, source, data)
  return { exports, cacheRejected: script.cachedDataRejected === true }
}

const CACHE_HEADER_BYTES = 12

/** What a code cache file starts with: crc32 and length of the source it was made from, crc32 of V8's data. */
function cacheHeader(source, data) {
  const { crc32 } = require('node:zlib')
  const head = Buffer.alloc(CACHE_HEADER_BYTES)
  head.writeUInt32LE(crc32(source), 0)
  head.writeUInt32LE(source.length, 4)
  head.writeUInt32LE(crc32(data), 8)
  return head
}

/**
 * Compiles `source` (the bytes of `file`) with vm.Script and runs it as require() would, registered in
 * require.cache so that files it loads (dist/helper-config.cjs) require this one instance back. No import() in the
 * file (scripts/bundle.mjs checks): a vm.Script has no module loader for it in node 20.
 */
function runCommonJs(file, source, cachedData) {
  const Module = require('node:module')
  const { Script } = require('node:vm')
  const script = new Script(Module.wrap(source.toString('utf8')), { filename: file, cachedData })
  const dir = require('node:path').dirname(file)
  const m = new Module(file, module)
  m.filename = file
  m.paths = Module._nodeModulePaths(dir)
  require.cache[file] = m
  script.runInThisContext()(m.exports, Module.createRequire(file), m, file, dir)
  m.loaded = true
  return { script, exports: m.exports }
}

/**
 * Whether argv may be a fast form (helper-form.ts fastForm decides): an lzop-style flag first, or a bare `encode`
 * or `decode`. Other commands go straight to the whole CLI without loading the fast bundle first (~20 ms).
 */
function mayBeFast(argv) {
  const first = argv[0]
  return first !== undefined && (first.startsWith('-') || first === 'encode' || first === 'decode')
}

async function main(argv) {
  const candidate = mayBeFast(argv)
  const bundle = candidate ? fast() : undefined
  let form
  if (candidate) {
    const { fastForm } = bundle ?? (await import('../dist/helper-form.js'))
    form = fastForm(argv, process.stderr.isTTY === true)
  }
  const filters = form === undefined ? undefined : (bundle ?? (await import('../dist/fast.js')))
  if (form === 'helper') {
    // libvirt waits for the helper's exit before it goes on (a save's next step, a restored guest's resume). Once
    // runHelper returned, every byte is out (its writes are synchronous, or awaited to their end): exit now rather
    // than tear the heap down first, which took another ~10 ms. Nothing above creates process.stdout: that makes a
    // pipe on stdout non-blocking, and the helper's -c writes libvirt's pipe with blocking writes
    // (src/libvirt-helper/blocking-pipe.ts).
    process.exit(await filters.runHelper(argv))
  }
  // The fast forms create process.stdout only on the paths that use it (src/fast.ts): creating it makes a pipe on
  // fd 1 non-blocking, and `-dc` into a pipe writes fd 1 itself.
  if (form !== undefined) return filters.fastFilter(form)
  // A reader that stops early (`xbzrle --help | head`) is no crash: a data pipeline still sees EPIPE through its
  // own error handling (exit 4); anything else written to a closed stdout is simply dropped.
  process.stdout.on('error', () => {})
  let cli
  try {
    cli = await import('../dist/xbzrle.mjs')
  } catch (e) {
    if (!missing(e, 'xbzrle.mjs')) throw e
    cli = await import('../dist/index.js')
  }
  return cli.main(argv)
}

// For scripts/code-cache.cjs, which writes the caches, and for the tests (fast-forms.test.ts).
module.exports = { cacheHeader, requireWithCodeCache, runCommonJs }
if (require.main === module)
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (e) => {
      // Only a broken install gets here (every command reports its own errors): one line, exit 1.
      process.stderr.write(`xbzrle: ${e?.message ?? e}\n`)
      process.exitCode = 1
    },
  )
