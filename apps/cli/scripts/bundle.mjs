// Bundles the built CLI (dist/index.js and everything it imports, our packages and npm dependencies alike) into
// one file, dist/xbzrle.mjs, which bin/xbzrle.js runs; and the fast `xbzrle -c` path (dist/fast-encode.js: only
// the encoder) into dist/fast-encode.mjs.
//
// Why: libvirt starts the helper once per save and restore, and QEMU's exec: migration starts it once per
// migration, so start-up is on the critical path. Node resolving and compiling ~300 separate ES modules took
// 0.6-0.8 s on our 2-core test machine; one file takes a fraction of that (measured in docs/libvirt-helper.md).
//
// Kept outside the bundle: the native addons (they load .node binaries from their own directories, and are
// optional), ws's optional native helpers, and the private testkit (only `demo --qemu` in a source checkout).
import { build } from 'esbuild'

const here = new URL('..', import.meta.url)

await build({
  absWorkingDir: here.pathname,
  entryPoints: { xbzrle: 'dist/index.js', 'fast-encode': 'dist/fast-encode.js' },
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
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
