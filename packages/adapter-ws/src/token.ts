import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'

export interface LoadTokenOptions {
  /** Path of a file holding the token (surrounding whitespace is trimmed). */
  file?: string
  /** Name of an environment variable holding the token. */
  env?: string
  /** Environment to read (default process.env). */
  environment?: NodeJS.ProcessEnv
}

/**
 * Loads the shared secret from a file or an environment variable (never from argv: command lines are visible to
 * every user through /proc). The file wins when both are given. Throws with a one-line message if nothing usable is
 * found; returns undefined if neither source was asked for.
 */
export function loadToken(options: LoadTokenOptions): string | undefined {
  if (options.file !== undefined) {
    let text: string
    try {
      text = readFileSync(options.file, 'utf8')
    } catch (err) {
      throw new Error(`cannot read token file ${options.file}: ${(err as NodeJS.ErrnoException).code ?? err}`)
    }
    const token = text.trim()
    if (token === '') throw new Error(`token file ${options.file} is empty`)
    return token
  }
  if (options.env !== undefined) {
    const token = (options.environment ?? process.env)[options.env]?.trim()
    if (!token) throw new Error(`environment variable ${options.env} is not set or empty`)
    return token
  }
  return undefined
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/** Constant-time token comparison over fixed-length SHA-256 digests. */
export function tokensEqual(expected: string, given: string | undefined): boolean {
  if (given === undefined) return false
  return timingSafeEqual(digest(expected), digest(given))
}

/** Extracts the token from an `Authorization: Bearer …` header value. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m ? m[1] : undefined
}
