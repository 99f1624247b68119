/**
 * The helper's settings file, `/etc/xbzrle/helper.conf` (or the file named by XBZRLE_HELPER_CONF, or the one the
 * installed wrapper names). Same syntax as libvirt's qemu.conf: `key = value` lines, `#` comments, strings in
 * double quotes, numbers and true/false bare.
 *
 *   cache_size = "256M"        # parse pages, cache them (unset: pages copied unparsed, a save sends each once)
 *   format_version = 2         # 1 for old readers
 *   compression = "zstd"       # none | lz4 | zstd | deflate (format v2; default: best installed)
 *   mode = "canonical"         # canonical | compact
 *   threads = 1                # zstd worker threads (default: see helperThreads in config-file.ts)
 *   encode = true              # false: the helper only decodes; new saves go to the real program
 *   real_lzop = "/usr/bin/lzop.distrib"   # the real program (default: looked up, see real-program.ts)
 *   real_zstd = "/usr/bin/zstd.distrib"
 */
import { readFileSync } from 'node:fs'
import { CODEC_NAMES, SUPPORTED_VERSIONS } from '@xbzrle/protocol/stream'
import { z } from 'zod'
import { parseSize } from '../io.js'

import { DEFAULT_HELPER_CONF, HelperConfigError } from './config-file.js'

export { DEFAULT_HELPER_CONF, encoderOptionsOf, HelperConfigError } from './config-file.js'

const sizeValue = z.union([z.string(), z.number().int().positive()]).transform((v, ctx) => {
  if (typeof v === 'number') return v
  try {
    return parseSize(v)
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message })
    return z.NEVER
  }
})

const absPath = z.string().regex(/^\//, 'must be an absolute path')

const ConfigObject = z
  .object({
    cache_size: sizeValue.optional(),
    format_version: z
      .number()
      .int()
      .refine((v) => SUPPORTED_VERSIONS.includes(v), {
        message: `must be one of ${SUPPORTED_VERSIONS.join(', ')}`,
      })
      .optional(),
    compression: z.enum(CODEC_NAMES).optional(),
    mode: z.enum(['canonical', 'compact']).optional(),
    ways: z.number().int().min(1).max(64).optional(),
    threads: z.number().int().min(0).max(16).optional(),
    encode: z.boolean().optional(),
    real_lzop: absPath.optional(),
    real_zstd: absPath.optional(),
  })
  .strict()

export const HelperConfigSchema = ConfigObject.refine(
  (c) => !(c.format_version === 1 && c.compression !== undefined && c.compression !== 'none'),
  { message: 'compression needs format_version 2 or later', path: ['compression'] },
)

export type HelperConfig = z.infer<typeof HelperConfigSchema>

/** Parses qemu.conf-style `key = value` text into plain values (strings, integers, booleans). */
export function parseConfText(text: string, file = 'helper.conf'): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = stripComment(lines[i]!).trim()
    if (line === '') continue
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line)
    if (!m)
      throw new HelperConfigError(`${file} line ${i + 1}: expected key = value, got ${JSON.stringify(line)}`)
    const [, key, raw] = m as unknown as [string, string, string]
    if (Object.hasOwn(out, key)) throw new HelperConfigError(`${file} line ${i + 1}: ${key} is set twice`)
    out[key] = parseValue(raw, `${file} line ${i + 1}`)
  }
  return out
}

function stripComment(line: string): string {
  let inString = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (ch === '"' && line[i - 1] !== '\\') inString = !inString
    else if (ch === '#' && !inString) return line.slice(0, i)
  }
  return line
}

function parseValue(raw: string, where: string): unknown {
  const v = raw.trim()
  if (v.startsWith('"')) {
    if (v.length < 2 || !v.endsWith('"')) throw new HelperConfigError(`${where}: unterminated string ${v}`)
    return v.slice(1, -1).replace(/\\(["\\])/g, '$1')
  }
  if (v === 'true') return true
  if (v === 'false') return false
  if (/^-?\d+$/.test(v)) return Number(v)
  if (v === '') throw new HelperConfigError(`${where}: missing value`)
  throw new HelperConfigError(`${where}: values are "strings", integers, true or false (got ${v})`)
}

/** Validates parsed settings; the first problem becomes a one-line HelperConfigError. */
export function validateConfig(values: Record<string, unknown>, file = 'helper.conf'): HelperConfig {
  // `encode = 1` / `encode = 0` are accepted like qemu.conf booleans
  const v = { ...values }
  if (v.encode === 1 || v.encode === 0) v.encode = v.encode === 1
  const r = HelperConfigSchema.safeParse(v)
  if (r.success) return r.data
  const issue = r.error.issues[0]!
  const key = issue.path.join('.')
  if (issue.code === 'unrecognized_keys') {
    throw new HelperConfigError(
      `${file}: unknown setting ${issue.keys.join(', ')} (known: ${Object.keys(ConfigObject.shape).join(', ')})`,
    )
  }
  throw new HelperConfigError(`${file}: ${key ? `${key}: ` : ''}${issue.message}`)
}

/**
 * Loads the helper's settings. `path` (from the wrapper) wins over XBZRLE_HELPER_CONF, which wins over the default.
 * A missing default file means defaults; a missing file that was asked for explicitly is an error.
 */
export function loadHelperConfig(
  path?: string,
  env: NodeJS.ProcessEnv = process.env,
): { config: HelperConfig; file?: string } {
  const explicit = path ?? env.XBZRLE_HELPER_CONF
  const file = explicit ?? DEFAULT_HELPER_CONF
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' && explicit === undefined) return { config: {} }
    throw new HelperConfigError(`cannot read helper config ${file}: ${code ?? (e as Error).message}`)
  }
  return { config: validateConfig(parseConfText(text, file), file), file }
}
