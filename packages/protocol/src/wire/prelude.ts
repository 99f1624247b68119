import { type ProtocolError, streamError } from '../errors.js'
import type { ChunkQueue } from './chunk-queue.js'
import { MAGIC, MAGIC_LENGTH, matchesMagicPrefix } from './magic.js'
import { readVarint } from './varint.js'

/**
 * The prelude every version shares: 8-byte magic, then the format version as a varint.
 * Returns the version and its byte length once enough bytes are there, `undefined` if more are needed.
 * `eof` = no more bytes will come. Throws BAD_MAGIC / MALFORMED / TRUNCATED.
 */
export function readPrelude(q: ChunkQueue, eof: boolean): { version: number; length: number } | undefined {
  const have = Math.min(q.length, MAGIC_LENGTH + 8)
  const head = q.view(have)
  if (!matchesMagicPrefix(head)) throw badMagic(head)
  if (have < MAGIC_LENGTH) {
    if (eof)
      throw streamError(
        'TRUNCATED',
        `input ends inside the magic (${have} of ${MAGIC_LENGTH} bytes)`,
        q.offset + have,
      )
    return undefined
  }
  const r = readVarint(head, MAGIC_LENGTH, head.length)
  if (!r.ok) {
    if (r.reason === 'incomplete') {
      if (eof) throw streamError('TRUNCATED', 'input ends inside the format version', q.offset + head.length)
      return undefined
    }
    throw streamError(
      'MALFORMED',
      `format version ${r.reason === 'overlong' ? 'is overlong' : 'is too large'}`,
      MAGIC_LENGTH,
    )
  }
  return { version: r.value, length: MAGIC_LENGTH + r.length }
}

export function unsupportedVersion(version: number, maxVersion: number): ProtocolError {
  if (version === 0)
    return streamError('UNSUPPORTED_VERSION', 'format version 0 is invalid', MAGIC_LENGTH, 'corrupted input')
  return streamError(
    'UNSUPPORTED_VERSION',
    `format version ${version} is newer than this reader supports (it reads ${maxVersion === 1 ? '1' : `1-${maxVersion}`})`,
    MAGIC_LENGTH,
    'written by a newer xbzrle; upgrade to read it',
  )
}

function badMagic(head: Uint8Array): ProtocolError {
  let what = 'bad magic'
  // Typical text-mode damage of the magic: CR LF → LF, or LF → CR LF.
  if (head[0] === 0x89 && head[1] === 0x58 && head[2] === 0x42 && head[3] === 0x5a)
    what = 'bad magic (line endings changed: the file was transferred in text mode)'
  else if (head[0] === 0x09 || head[0] === 0x3f)
    what = 'bad magic (high bit lost: the file went through a 7-bit text channel)'
  let i = 0
  while (i < head.length && i < MAGIC_LENGTH && head[i] === MAGIC[i]) i++
  return streamError('BAD_MAGIC', what, i, 'not an xbzrle stream, or damaged')
}
