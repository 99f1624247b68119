// Writes V8's code cache for a CommonJS bundle: `node scripts/code-cache.cjs dist/fast.cjs` makes
// dist/fast.cjs.v8cache, which bin/xbzrle.js hands to V8 when it loads the file (requireWithCodeCache there).
// Layout: cacheHeader (crc32 and length of the file, crc32 of the data), then V8's cached data. The file's top level is run
// first so that the cache also holds the functions it compiles (the bundle's top level only defines things).
// A cache from another node version or other V8 flags is rejected by V8 at load, and the file compiles as usual.
'use strict'
const { readFileSync, writeFileSync } = require('node:fs')
const { resolve } = require('node:path')
const { cacheHeader, runCommonJs } = require('../bin/xbzrle.js')

const file = resolve(process.argv[2])
const source = readFileSync(file)
const { script } = runCommonJs(file, source, undefined)
const data = script.createCachedData()
writeFileSync(`${file}.v8cache`, Buffer.concat([cacheHeader(source, data), data]))
