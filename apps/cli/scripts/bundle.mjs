// Bundles the built CLI (dist/index.js and everything it imports, our packages and npm dependencies alike) into
// one file, dist/xbzrle.mjs, which bin/xbzrle.js runs; and the fast forms (dist/fast.js: `-c`, `-dc` and the libvirt
// helper, only the filters) into dist/fast.mjs.
//
// Why: libvirt starts the helper once per save and restore, and QEMU's exec: migration starts it once per
// migration, so start-up is on the critical path. Node resolving and compiling ~300 separate ES modules took
// 0.6-0.8 s on our 2-core test machine; one file takes a fraction of that (measured in docs/libvirt-helper.md).
//
// Kept outside the bundle: the native addons (they load .node binaries from their own directories, and are
// optional), ws's optional native helpers, and the private testkit (only `demo --qemu` in a source checkout).
import { rmSync } from 'node:fs'
import { build } from 'esbuild'

const here = new URL('..', import.meta.url)
// Chunk names carry a content hash: drop the last build's, or dist/ keeps every chunk ever made.
rmSync(new URL('dist/chunks', here), { recursive: true, force: true })

await build({
  absWorkingDir: here.pathname,
  entryPoints: { xbzrle: 'dist/index.js', fast: 'dist/fast.js' },
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  // Code the fast bundle reaches only through a dynamic import (the helper config's zod schema) and the commands
  // the CLI imports when they run go to chunks of their own, loaded only when used.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Less to parse at start-up; names are kept so that `--debug` stack traces stay readable.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  external: [
    'zstd-napi',
    'zstd-napi/*',
    'lz4-napi',
    '@node-rs/crc32',
    'bufferutil',
    'utf-8-validate',
    '@xbzrle/testkit',
  ],
  // CommonJS dependencies (commander, prom-client, ws) call require() for node built-ins.
  banner: {
    js: "import { createRequire as __xbzrleCreateRequire } from 'node:module'; const require = __xbzrleCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
})
