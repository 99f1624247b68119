#!/usr/bin/env node
// Thin launcher: the CLI always runs built JavaScript from dist/, never TypeScript on the fly.
import { main } from '../dist/index.js'

process.exitCode = await main(process.argv.slice(2))
