#!/usr/bin/env node
// Thin launcher: the CLI always runs built JavaScript from dist/, never TypeScript on the fly.
import { main } from '../dist/index.js'

// A reader that stops early (`xbzrle --help | head`) is no crash: a data pipeline still sees EPIPE through its own
// error handling (exit 4); anything else written to a closed stdout is simply dropped.
process.stdout.on('error', () => {})

process.exitCode = await main(process.argv.slice(2))
