/**
 * Machine-readable outputs of the CLI's observability features, as zod schemas. The JSON Schemas published in
 * apps/cli/schemas/ are generated from these (`npm run generate -w xbzrle`); a test keeps them in step.
 *
 *  - `--stats-json FILE|-`: one StatsReport document at the end of a run.
 *  - `--progress json[=FD|FILE]`: one ProgressEvent per line while it runs.
 */
import { z } from 'zod'

/** Bump when a field changes meaning or goes away (adding optional fields does not bump it). */
export const OBSERVE_SCHEMA_VERSION = 1

const count = z.number().int().nonnegative()
const bytes = count
const ms = z.number().nonnegative()
const fraction = z.number().min(0).max(1)

export const PassPagesSchema = z
  .object({
    full: count.describe('pages sent whole (cache miss or delta too big)'),
    delta: count.describe('pages sent as an XBZRLE delta against the cached copy'),
    same: count.describe('pages identical to the cached copy'),
    zero: count.describe("QEMU's ZERO records"),
    foreign: count.describe("QEMU's own XBZRLE records, passed through"),
    other: count.describe('records not modelled (compressed pages), passed through'),
    total: count,
  })
  .strict()

export const PassStatsSchema = z
  .object({
    pass: z.number().int().positive().describe('1-based pass number'),
    startMs: ms.describe('start of the pass, ms since the filter started'),
    wallMs: ms.describe('wall time of the pass in ms'),
    bytesIn: bytes,
    bytesOut: bytes,
    ratio: z.number().nonnegative().describe('bytesOut / bytesIn; 0 for an empty pass'),
    pages: PassPagesSchema,
    resentPages: count.describe('pages of this pass sent in an earlier pass'),
    resentShare: fraction.describe('resentPages / pages.total'),
    cacheHits: count,
    cacheMisses: count,
    hitRate: fraction.optional().describe('cacheHits / (cacheHits + cacheMisses); absent when not asked'),
    final: z.boolean().describe('the pass that ended with the stream'),
  })
  .strict()
export type PassStatsJson = z.infer<typeof PassStatsSchema>

export const CommandSchema = z.enum([
  'encode',
  'decode',
  'send',
  'receive',
  'proxy-source',
  'proxy-destination',
  'inspect',
])
export type ObservedCommand = z.infer<typeof CommandSchema>

export const TotalsSchema = z
  .object({
    bytesIn: bytes,
    bytesOut: bytes,
    ratio: z.number().nonnegative(),
    pages: PassPagesSchema,
    resentPages: count,
    cacheHits: count,
    cacheMisses: count,
    hitRate: fraction.optional(),
    passes: count.describe('finished passes'),
    wallMs: ms,
  })
  .strict()
export type Totals = z.infer<typeof TotalsSchema>

/** The document `--stats-json` writes. */
export const StatsReportSchema = z
  .object({
    schema: z.literal('xbzrle.stats'),
    version: z.literal(OBSERVE_SCHEMA_VERSION),
    command: CommandSchema,
    /**
     * Who found the passes: 'encoder' (QEMU's dirty-sync iterations, exactly), 'decoder' (the passes the page
     * keys prove: QEMU's empty pre-completion pass is never among them; see docs/observability.md), 'none'.
     */
    passDetection: z.enum(['encoder', 'decoder', 'none']),
    totals: TotalsSchema,
    passes: z.array(PassStatsSchema),
  })
  .strict()
export type StatsReport = z.infer<typeof StatsReportSchema>

const base = {
  v: z.literal(OBSERVE_SCHEMA_VERSION),
  ms: ms.describe('ms since the command started'),
  command: CommandSchema,
  id: z.string().max(128).optional().describe('migration / session id, when there is one'),
}

export const ConvergenceSchema = z
  .object({
    /** Dirty bytes (QEMU bytes) of each finished pass after the first, oldest first, at most the last 8. */
    dirtyBytes: z.array(bytes),
    /** Geometric mean of the last (up to 3) pass-to-pass ratios of dirty bytes; absent before pass 3 ends. */
    shrinkFactor: z.number().nonnegative().optional(),
    /** 'shrinking' when shrinkFactor < 0.95, 'growing' when > 1.05, else 'flat'; 'unknown' before pass 3 ends. */
    trend: z.enum(['shrinking', 'flat', 'growing', 'unknown']),
    /** Projected QEMU bytes still to send if the passes keep shrinking that way; absent unless shrinking. */
    projectedRemainingBytes: bytes.optional(),
    /** The same after encoding, at the last pass's ratio. */
    projectedRemainingBytesOut: bytes.optional(),
    /** projectedRemainingBytesOut at the measured link rate; absent without a rate. */
    projectedSeconds: z.number().nonnegative().optional(),
  })
  .strict()
export type Convergence = z.infer<typeof ConvergenceSchema>

export const ProgressEventSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('start'), ...base, pid: z.number().int().positive() }).strict(),
  z.object({ event: z.literal('pass-start'), ...base, pass: z.number().int().positive() }).strict(),
  z.object({ event: z.literal('pass-end'), ...base, stats: PassStatsSchema }).strict(),
  z
    .object({
      event: z.literal('totals'),
      ...base,
      pass: z.number().int().positive().describe('the pass in progress'),
      totals: TotalsSchema,
      linkRate: z.number().nonnegative().describe('bytes out per second over the last interval'),
      inRate: z.number().nonnegative().describe('bytes in per second over the last interval'),
    })
    .strict(),
  z
    .object({
      event: z.literal('trend'),
      ...base,
      pass: z.number().int().positive().describe('the pass that just ended'),
      linkRate: z.number().nonnegative().describe('bytes out per second since the start'),
      convergence: ConvergenceSchema,
    })
    .strict(),
  z
    .object({
      event: z.literal('end'),
      ...base,
      status: z.enum(['ok', 'error', 'interrupted']),
      exitCode: z.number().int().nonnegative(),
      error: z.string().optional(),
      totals: TotalsSchema,
    })
    .strict(),
])
export type ProgressEvent = z.infer<typeof ProgressEventSchema>

/** The committed JSON Schema files: name → exact content (apps/cli/schemas/). */
export function observeJsonSchemaFiles(): Record<string, string> {
  const files: Record<string, z.ZodType> = {
    'stats-report.schema.json': StatsReportSchema,
    'progress-event.schema.json': ProgressEventSchema,
  }
  const out: Record<string, string> = {}
  for (const [name, schema] of Object.entries(files)) {
    const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' })
    out[name] = `${JSON.stringify(json, null, 2)}\n`
  }
  return out
}
