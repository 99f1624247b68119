/**
 * Binary transport messages: an 8-byte header then the opaque payload.
 *   byte 0: kind (1 = data, 2 = end of this direction), byte 1: reserved (0), bytes 2–7: sequence number (uint48 BE).
 * Both kinds are sequenced; END carries no payload. Control messages (hello, welcome, refuse, ack, done) are JSON text.
 */
export const HEADER_BYTES = 8
export const KIND_DATA = 1
export const KIND_END = 2

/** Builds one message; the payload parts are copied once into the new buffer. */
export function encodeMessage(kind: number, seq: number, parts: readonly Uint8Array[] = []): Buffer {
  let len = 0
  for (const p of parts) len += p.length
  const buf = Buffer.allocUnsafe(HEADER_BYTES + len)
  buf[0] = kind
  buf[1] = 0
  buf.writeUIntBE(seq, 2, 6)
  let off = HEADER_BYTES
  for (const p of parts) {
    buf.set(p, off)
    off += p.length
  }
  return buf
}

export interface DecodedMessage {
  kind: number
  seq: number
  payload: Buffer
}

/** Returns undefined on a malformed header. The payload is a view into `buf` (no copy). */
export function decodeMessage(buf: Buffer): DecodedMessage | undefined {
  if (buf.length < HEADER_BYTES) return undefined
  const kind = buf[0]!
  if ((kind !== KIND_DATA && kind !== KIND_END) || buf[1] !== 0) return undefined
  const seq = buf.readUIntBE(2, 6)
  if (seq < 1) return undefined
  if (kind === KIND_END && buf.length !== HEADER_BYTES) return undefined
  return { kind, seq, payload: buf.subarray(HEADER_BYTES) }
}
