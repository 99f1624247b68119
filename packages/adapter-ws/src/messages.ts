/**
 * Control messages on the wire (JSON text frames): the protocol package's zod schemas (hello, welcome, refuse,
 * ack), validated with `parseControlMessage`, plus a few optional transport fields that adapter-ws adds through
 * `.extend` (so a plain protocol Hello stays valid):
 *   hello.token          token, for clients that cannot set an Authorization header
 *   hello.returnFromSeq  first return-path sequence number the client wants
 *   welcome.maxMessageBytes  largest binary message the receiver accepts
 *   ack.final            present on the final ack only: payload bytes delivered; the stream is complete
 *   welcome.sessionSecret    32 random bytes (base64url), in the first welcome of a session only
 *   hello.sessionSecret      that secret, required to resume the session
 *   hello.secretAware        true in every hello of a sender that keeps the secret: only a session started by
 *                            such a hello
 *                            insists on it (a sender older than the secret can still resume its own session)
 *   hello.base / welcome.base  the base image each side holds (issue #15: `{ fingerprint: 'sha256:…', bytes }`):
 *                            the sender encodes against its base only when the welcome names the same one
 * Older peers ignore fields they do not know (zod strips them), so these stay compatible with the v1 release.
 */
import {
  AckSchema,
  type ControlMessage,
  HelloSchema,
  parseControlMessage,
  RefuseSchema,
  safeJsonParse,
  WelcomeSchema,
} from '@xbzrle/protocol'
import { z } from 'zod'

const uint = AckSchema.shape.seq

/** A base image one side holds: its fingerprint (SHA-256 of its original bytes) and length. */
export const BaseOfferSchema = z.object({
  fingerprint: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  bytes: uint,
})
export type BaseOffer = z.infer<typeof BaseOfferSchema>

export const WsHelloSchema = HelloSchema.extend({
  base: BaseOfferSchema.optional(),
  token: RefuseSchema.shape.message.optional(),
  returnFromSeq: uint.optional(),
  sessionSecret: RefuseSchema.shape.message.optional(),
  secretAware: z.boolean().optional(),
})
export const WsWelcomeSchema = WelcomeSchema.extend({
  base: BaseOfferSchema.optional(),
  maxMessageBytes: uint.optional(),
  sessionSecret: RefuseSchema.shape.message.optional(),
})
export const WsAckSchema = AckSchema.extend({ final: uint.optional() })

/** Every control message of adapter-ws: the protocol's union with the extended hello, welcome and ack. */
export const WsControlSchema = WsHelloSchema.or(WsWelcomeSchema).or(RefuseSchema).or(WsAckSchema)

// The types are the schemas' own (no parallel interfaces to drift from what is validated).
export type WsHello = z.infer<typeof WsHelloSchema>
export type WsWelcome = z.infer<typeof WsWelcomeSchema>
export type WsAck = z.infer<typeof WsAckSchema>
export type WsRefuse = z.infer<typeof RefuseSchema>
export type WsControl = z.infer<typeof WsControlSchema>

const EXTENDED = { hello: WsHelloSchema, welcome: WsWelcomeSchema, ack: WsAckSchema } as const

/** Parses a text control message; returns a one-line error instead of throwing. */
export function parseControl(text: string): { ok: true; msg: WsControl } | { ok: false; error: string } {
  let value: unknown
  try {
    value = safeJsonParse(text)
  } catch {
    return { ok: false, error: 'control message is not valid JSON' }
  }
  let base: ControlMessage
  try {
    base = parseControlMessage(value)
  } catch (err) {
    return { ok: false, error: (err as Error).message }
  }
  if (base.type === 'refuse') return { ok: true, msg: base }
  const r = EXTENDED[base.type].safeParse(value)
  if (!r.success)
    return {
      ok: false,
      error: `invalid ${base.type}: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    }
  return { ok: true, msg: r.data as WsControl }
}
