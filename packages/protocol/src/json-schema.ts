import { z } from 'zod'
import {
  CliOptionsSchema,
  ControlMessageSchema,
  FilterStatsSchema,
  StreamHeaderJsonSchema,
} from './schema.js'

/** The committed spec/*.json files: name → exact content. `scripts/generate.ts` writes them; a test compares. */
export function jsonSchemaFiles(): Record<string, string> {
  const files: Record<string, z.ZodType> = {
    'stream-header.schema.json': StreamHeaderJsonSchema,
    'control-message.schema.json': ControlMessageSchema,
    'filter-stats.schema.json': FilterStatsSchema,
    'cli-options.schema.json': CliOptionsSchema,
  }
  const out: Record<string, string> = {}
  for (const [name, schema] of Object.entries(files)) {
    const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' })
    out[name] = `${JSON.stringify(json, null, 2)}\n`
  }
  return out
}
