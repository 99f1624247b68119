/**
 * WebSocket close codes used by adapter-ws (application range 4000–4999). Each refusal is also sent as a JSON
 * `refuse` message (code name + full message) just before the close, because close reasons are limited to 123 bytes.
 */
export const CloseCode = {
  /** A newer connection resumed this session; the old one is closed. */
  SUPERSEDED: 4000,
  /** The receiver is shutting down. */
  SERVER_SHUTDOWN: 4001,
  /** Malformed, non-JSON or schema-invalid hello, binary data before the hello, unexpected control message. */
  BAD_HELLO: 4400,
  /** Missing or wrong token. */
  BAD_TOKEN: 4401,
  /** Migration id outside the safe charset (`[A-Za-z0-9._-]{1,128}`, no leading dot). */
  BAD_MIGRATION_ID: 4402,
  /** Resume without this session's secret (issued in the first welcome), or with a wrong one. */
  BAD_SESSION_SECRET: 4403,
  /** URL path not served. */
  NOT_FOUND: 4404,
  /** No protocol version in common. */
  NO_COMMON_VERSION: 4406,
  /** No hello within the handshake timeout. */
  HANDSHAKE_TIMEOUT: 4408,
  /** A session with this migration id is already running (hello without resume). */
  DUPLICATE_SESSION: 4409,
  /** Resume asked for a session the receiver does not have (expired or unknown), or from a sequence it cannot serve. */
  SESSION_GONE: 4410,
  /** The pipeline's destination (e.g. a fixed output file) is in use by another migration. */
  OUTPUT_BUSY: 4411,
  /** Control message larger than allowed (data messages above maxPayload get the standard 1009). */
  MESSAGE_TOO_BIG: 4413,
  /** Transport protocol violation after the handshake (sequence gap, unknown message kind). */
  PROTOCOL_ERROR: 4422,
  /** Too many concurrent sessions. */
  TOO_MANY_SESSIONS: 4429,
  /** The session's pipeline (e.g. the decoder) failed; the stream is rejected. */
  PIPELINE_ERROR: 4500,
  /** Accepting the session would exceed the receiver's global memory cap. */
  OVER_MEMORY_CAP: 4503,
  /** No traffic for the idle timeout. */
  IDLE_TIMEOUT: 4504,
  /** The session's declared memory needs exceed the per-session budget. */
  SESSION_TOO_LARGE: 4507,
  /** The stream header (in the data) does not match what the hello declared / the memory budget admitted. */
  STREAM_HEADER_MISMATCH: 4508,
} as const
export type CloseCodeName = keyof typeof CloseCode

const byNumber = new Map<number, CloseCodeName>(
  Object.entries(CloseCode).map(([k, v]) => [v, k as CloseCodeName]),
)

/** Name of a close code ("BAD_TOKEN"), or the standard meaning of 1000–1015, or undefined. */
export function closeCodeName(code: number): string | undefined {
  const ours = byNumber.get(code)
  if (ours) return ours
  const std: Record<number, string> = {
    1000: 'NORMAL',
    1001: 'GOING_AWAY',
    1002: 'PROTOCOL_ERROR',
    1003: 'UNSUPPORTED_DATA',
    1005: 'NO_STATUS',
    1006: 'ABNORMAL_CLOSURE',
    1007: 'INVALID_PAYLOAD',
    1008: 'POLICY_VIOLATION',
    1009: 'MESSAGE_TOO_BIG',
    1011: 'INTERNAL_ERROR',
  }
  return std[code]
}

/** Close codes after which the sender gives up instead of reconnecting. */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  1002,
  1003,
  1007,
  1008,
  1009,
  CloseCode.BAD_HELLO,
  CloseCode.BAD_TOKEN,
  CloseCode.BAD_MIGRATION_ID,
  CloseCode.BAD_SESSION_SECRET,
  CloseCode.NOT_FOUND,
  CloseCode.NO_COMMON_VERSION,
  CloseCode.DUPLICATE_SESSION,
  CloseCode.SESSION_GONE,
  CloseCode.OUTPUT_BUSY,
  CloseCode.MESSAGE_TOO_BIG,
  CloseCode.PROTOCOL_ERROR,
  CloseCode.PIPELINE_ERROR,
  CloseCode.OVER_MEMORY_CAP,
  CloseCode.SESSION_TOO_LARGE,
  CloseCode.STREAM_HEADER_MISMATCH,
])

/**
 * Thrown (or used to destroy the pipeline's Writable, or to reject its `done`) to refuse a session with a specific
 * close code instead of the generic PIPELINE_ERROR, e.g. `new SessionRefusal('OUTPUT_BUSY', 'output … is in use')`.
 */
export class SessionRefusal extends Error {
  override name = 'SessionRefusal'
  constructor(
    readonly codeName: CloseCodeName,
    message: string,
  ) {
    super(message)
  }
}
