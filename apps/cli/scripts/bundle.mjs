// Bundles the built CLI (dist/index.js and everything it imports, our packages and npm dependencies alike) into
// dist/xbzrle.mjs (plus chunks loaded on demand), which bin/xbzrle.js runs; and the fast forms (dist/fast.js: `-c`,
// `-dc` and the libvirt helper, only the filters) into one CommonJS file, dist/fast.cjs.
//
// Why: libvirt starts the helper once per save and restore, and QEMU's exec: migration starts it once per
// migration, so start-up is on the critical path. Node resolving and compiling ~300 separate ES modules took
// 0.6-0.8 s on our 2-core test machine; one file takes a fraction of that (measured in docs/libvirt-helper.md).
//
// Kept outside the bundle: the native addons (they load .node binaries from their own directories, and are
// optional), ws's optional native helpers, and the private testkit (only `demo --qemu` in a source checkout).
import { execFileSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { build } from 'esbuild'

const here = new URL('..', import.meta.url)
// Chunk names carry a content hash: drop the last build's, or dist/ keeps every chunk ever made.
rmSync(new URL('dist/chunks', here), { recursive: true, force: true })

const external = [
  'zstd-napi',
  'zstd-napi/*',
  'lz4-napi',
  '@node-rs/crc32',
  'bufferutil',
  'utf-8-validate',
  '@xbzrle/testkit',
]

await build({
  absWorkingDir: here.pathname,
  entryPoints: { xbzrle: 'dist/index.js' },
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  // The commands the CLI imports when they run go to chunks of their own, loaded only when used.
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
  external,
  // CommonJS dependencies (commander, prom-client, ws) call require() for node built-ins.
  banner: {
    js: "import { createRequire as __xbzrleCreateRequire } from 'node:module'; const require = __xbzrleCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
})

// The fast forms as CommonJS, which bin/xbzrle.js (CommonJS too, bin/package.json) loads with require(): node's
// ES module loader (resolution, linking, the loader itself) cost ~15 ms of every `xbzrle -c` start, before its
// first byte (docs/libvirt-helper.md). The helper config's zod schema (config.js, ~600 KB with zod) stays out:
// V8 would parse it at every start. It is a second file, dist/helper-config.cjs, required only when a helper.conf
// exists, and it takes the few things it shares with the filters (the error class the helper tests with
// instanceof, parseSize) from dist/fast.cjs itself, so that there is one copy of each.
const commonjs = {
  absWorkingDir: here.pathname,
  outdir: 'dist',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  external,
  // Our sources resolve optional native packages with createRequire(import.meta.url).
  define: { 'import.meta.url': '__xbzrleImportMetaUrl' },
  banner: { js: "const __xbzrleImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
}

/**
 * Resolves imports matching `filter` (from `importer`) to `target`, a file next to the output, left external and
 * loaded with require(), also where the source says `await import()`: bin/xbzrle.js compiles dist/fast.cjs with
 * vm.Script (for the code cache), where import() has no loader in node 20.
 */
const redirect = (name, filter, importer, target) => ({
  name,
  setup(b) {
    b.onResolve({ filter }, (args) =>
      importer.test(args.importer) ? { path: target, namespace: 'require-external' } : undefined,
    )
    b.onResolve({ filter: /.*/, namespace: 'require-external' }, (args) => ({
      path: args.path,
      external: true,
    }))
    b.onLoad({ filter: /.*/, namespace: 'require-external' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)})`,
      loader: 'js',
    }))
  },
})

await build({
  ...commonjs,
  entryPoints: { fast: 'dist/fast.js' },
  plugins: [redirect('helper-config', /^\.\/config\.js$/, /config-file\.js$/, './helper-config.cjs')],
})
await build({
  ...commonjs,
  entryPoints: { 'helper-config': 'dist/libvirt-helper/config.js' },
  plugins: [
    redirect(
      'shared-with-fast',
      /^(\.\/config-file|\.\.\/io)\.js$/,
      /libvirt-helper\/config\.js$/,
      './fast.cjs',
    ),
  ],
})

if (/\bimport\(/.test(readFileSync(new URL('dist/fast.cjs', here), 'utf8')))
  throw new Error('dist/fast.cjs calls import(), which fails under the code cache loader (bin/xbzrle.js)')

// V8's code cache for dist/fast.cjs (scripts/code-cache.cjs), made by a fresh node: its flags must be those of a
// plain `node bin/xbzrle.js` for V8 to take the cache.
execFileSync(
  process.execPath,
  [new URL('code-cache.cjs', import.meta.url).pathname, '--warm-up', 'dist/fast.cjs'],
  {
    cwd: here.pathname,
    stdio: 'inherit',
    env: { ...process.env, NODE_OPTIONS: '' },
  },
)
