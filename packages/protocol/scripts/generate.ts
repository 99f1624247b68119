// Writes spec/*.json (JSON Schema of the control-plane zod schemas). Run: npm run generate -w @xbzrle/protocol
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { jsonSchemaFiles } from '../src/json-schema.js'

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'spec')
mkdirSync(dir, { recursive: true })
for (const [name, text] of Object.entries(jsonSchemaFiles())) {
  writeFileSync(join(dir, name), text)
  console.log(`wrote spec/${name}`)
}
