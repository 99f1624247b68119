#!/usr/bin/env node
// Thin launcher: the CLI always runs built JavaScript, never TypeScript on the fly. It runs the one-file bundle
// (dist/xbzrle.mjs, made by scripts/bundle.mjs) because libvirt and QEMU start us once per save, restore and
// migration, and loading hundreds of separate modules cost more start-up time than the work on a small image.
// dist/index.js is the same program unbundled (a build without the bundle step).
let cli
try {
  cli = await import('../dist/xbzrle.mjs')
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('xbzrle.mjs')) throw e
  cli = await import('../dist/index.js')
}

// A reader that stops early (`xbzrle --help | head`) is no crash: a data pipeline still sees EPIPE through its own
// error handling (exit 4); anything else written to a closed stdout is simply dropped.
process.stdout.on('error', () => {})

process.exitCode = await cli.main(process.argv.slice(2))
