import { ProtocolError } from './errors.js'

/** The newest format version this library reads and writes. */
export const CURRENT_VERSION = 3
/** Every version this library reads (a reader at version N reads every version ≤ N). */
export const SUPPORTED_VERSIONS: readonly number[] = Object.freeze([1, 2, 3])

/** "1", "2–3", "1, 3–5": compact list of versions for messages. */
export function formatVersions(versions: readonly number[]): string {
  const v = [...new Set(versions)].filter(Number.isInteger).sort((a, b) => a - b)
  if (v.length === 0) return 'nothing'
  const parts: string[] = []
  let start = v[0]!
  let prev = start
  for (const x of [...v.slice(1), Number.NaN]) {
    if (x === prev + 1) {
      prev = x
      continue
    }
    parts.push(start === prev ? `${start}` : `${start}–${prev}`)
    start = x
    prev = x
  }
  return parts.join(', ')
}

/**
 * The highest version both sides speak. Throws ProtocolError('NO_COMMON_VERSION') with a message like
 * "no common xbzrle protocol version: we speak 1, peer speaks 2–3".
 */
export function negotiateVersion(ours: readonly number[], theirs: readonly number[]): number {
  const mine = new Set(ours)
  let best = -1
  for (const v of theirs) if (mine.has(v) && Number.isInteger(v) && v > best) best = v
  if (best >= 1) return best
  throw new ProtocolError(
    'NO_COMMON_VERSION',
    `no common xbzrle protocol version: we speak ${formatVersions(ours)}, peer speaks ${formatVersions(theirs)}`,
  )
}
