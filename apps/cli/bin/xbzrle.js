#!/usr/bin/env node
// Thin launcher: the CLI always runs built JavaScript, never TypeScript on the fly. It runs the one-file bundles
// (dist/*.mjs, made by scripts/bundle.mjs) because libvirt and QEMU start us once per save, restore and
// migration, and loading hundreds of separate modules cost more start-up time than the work on a small image.
// dist/index.js and dist/fast.js are the same programs unbundled (a build without the bundle step).
import { fastForm } from '../dist/helper-form.js'

async function load(name) {
  try {
    return await import(`../dist/${name}.mjs`)
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes(`${name}.mjs`)) throw e
    return import(`../dist/${name === 'xbzrle' ? 'index' : name}.js`)
  }
}

// `xbzrle -c` / `-dc` and the libvirt helper load only the filters: QEMU and libvirt start them once per
// migration, save and restore, and their first byte is on the critical path (src/fast.ts).
const argv = process.argv.slice(2)
const form = fastForm(argv, process.stderr.isTTY === true)
if (form === 'helper') {
  // libvirt waits for the helper's exit before it goes on (a save's next step, a restored guest's resume). Once
  // runHelper returned, every byte is out (its writes are synchronous, or awaited to their end): exit now rather
  // than tear the heap down first, which took another ~10 ms. Nothing above creates process.stdout: that makes a
  // pipe on stdout non-blocking, and the helper's -c writes libvirt's pipe with blocking writes
  // (src/libvirt-helper/blocking-pipe.ts).
  process.exit(await (await load('fast')).runHelper(argv))
}
// A reader that stops early (`xbzrle --help | head`) is no crash: a data pipeline still sees EPIPE through its own
// error handling (exit 4); anything else written to a closed stdout is simply dropped.
process.stdout.on('error', () => {})
process.exitCode =
  form !== undefined ? await (await load('fast')).fastFilter(form) : await (await load('xbzrle')).main(argv)
