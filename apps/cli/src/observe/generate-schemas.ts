// Writes apps/cli/schemas/*.schema.json from the zod schemas in schemas.ts.
// Run: npx tsx --conditions=@xbzrle/source apps/cli/src/observe/generate-schemas.ts
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { observeJsonSchemaFiles } from './schemas.js'

export const SCHEMA_DIR = fileURLToPath(new URL('../../schemas/', import.meta.url))

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  mkdirSync(SCHEMA_DIR, { recursive: true })
  for (const [name, text] of Object.entries(observeJsonSchemaFiles())) {
    writeFileSync(`${SCHEMA_DIR}${name}`, text)
    process.stdout.write(`wrote ${SCHEMA_DIR}${name}\n`)
  }
}
