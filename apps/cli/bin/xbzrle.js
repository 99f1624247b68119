#!/usr/bin/env node
// Thin launcher: the CLI always runs built JavaScript from dist/, never TypeScript on the fly.
import { isFastEncode } from '../dist/helper-form.js'

// A reader that stops early (`xbzrle --help | head`) is no crash: a data pipeline still sees EPIPE through its own
// error handling (exit 4); anything else written to a closed stdout is simply dropped.
process.stdout.on('error', () => {})

// `xbzrle -c` in QEMU's exec: pipe loads only the encoder: its first byte is on the migration's critical path.
const argv = process.argv.slice(2)
process.exitCode = isFastEncode(argv, process.stderr.isTTY === true)
  ? await (await import('../dist/fast-encode.js')).fastEncode()
  : await (await import('../dist/index.js')).main(argv)
