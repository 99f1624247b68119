import {
  BASE_IMAGE_EXTENSION,
  FrameReader,
  type FrameReaderOptions,
  ProtocolError,
  type StreamHeader,
} from '@xbzrle/protocol'

export interface PeekedHeader {
  header: StreamHeader
  version: number
  /** The chunks read to find the header: give them to the decoder first, then the rest of the input. */
  head: Uint8Array[]
}

/** Critical header extensions this package acts on (the base image, issue #15). */
export const ACCEPTED_CRITICAL: readonly number[] = [BASE_IMAGE_EXTENSION]

/**
 * Reads an xbzrle stream's header from the front of `input` (at most the header record: ≤ 64 KiB plus the
 * chunk it ends in). The iterator is left after the chunks in `head`. Throws ProtocolError for a stream whose
 * header is bad, TRUNCATED when the input ends first.
 */
export async function peekStreamHeader(
  input: AsyncIterator<Uint8Array>,
  options: FrameReaderOptions = {},
): Promise<PeekedHeader> {
  const reader = new FrameReader({ acceptCritical: ACCEPTED_CRITICAL, ...options })
  const head: Uint8Array[] = []
  for (;;) {
    const r = await input.next()
    if (r.done) {
      reader.finish() // throws: the stream ended before its header
      throw new ProtocolError('TRUNCATED', 'xbzrle stream: input ended before the header (incomplete input)')
    }
    head.push(r.value)
    reader.push(r.value)
    const item = reader.next()
    if (item?.type === 'header') return { header: item.header, version: item.version, head }
  }
}

/** `head` then the rest of `input`, as one async iterable. */
export async function* replay(
  head: readonly Uint8Array[],
  input: AsyncIterator<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  yield* head
  for (;;) {
    const r = await input.next()
    if (r.done) return
    yield r.value
  }
}
