/** The sender's side of the handshake as pure functions: the hello it sends, and what it accepts as a welcome. */
import type { ReliableChannel } from '../channel.js'
import type { WsHello, WsWelcome } from '../messages.js'

export interface HelloInput {
  readonly migrationId: string
  readonly versions: readonly number[]
  readonly header: WsHello['header']
  /** The base image this sender can encode against (issue #15). */
  readonly base?: WsHello['base']
  /** Token for peers that cannot read the Authorization header (only with `tokenInHello`). */
  readonly token: string | undefined
  /** A hello went out before: this one resumes. */
  readonly resuming: boolean
  readonly sessionSecret: string | undefined
  readonly channel: Pick<ReliableChannel, 'nextExpected' | 'oldestHeld'>
}

export function buildHello(h: HelloInput): WsHello {
  const hello: WsHello = {
    type: 'hello',
    protocol: 'xbzrle',
    versions: [...h.versions],
    migrationId: h.migrationId,
    returnFromSeq: h.channel.nextExpected,
  }
  if (h.header) hello.header = h.header
  if (h.base) hello.base = h.base
  if (h.resuming) {
    hello.resume = { fromSeq: h.channel.oldestHeld }
    // only a resume carries the secret: it proves we are the sender that started the session
    if (h.sessionSecret !== undefined) hello.sessionSecret = h.sessionSecret
  }
  // this sender keeps the session secret: a session it starts (even from a resume hello) insists on it
  hello.secretAware = true
  if (h.token !== undefined) hello.token = h.token
  return hello
}

export interface WelcomeExpectation {
  readonly migrationId: string
  readonly versions: readonly number[]
  /** Version of an earlier welcome (0 before the first). */
  readonly version: number
  readonly channel: Pick<ReliableChannel, 'canResumeAt' | 'oldestHeld' | 'nextOutSeq'>
}

/** Why this welcome is a protocol error, or undefined if it is fine. */
export function welcomeProblem(m: WsWelcome, e: WelcomeExpectation): string | undefined {
  if (m.migrationId !== e.migrationId)
    return `welcome for migration ${m.migrationId}, expected ${e.migrationId}`
  if (!e.versions.includes(m.version)) return `receiver chose version ${m.version}, which was not offered`
  if (e.version !== 0 && m.version !== e.version)
    return `receiver switched version from ${e.version} to ${m.version} on resume`
  if (!e.channel.canResumeAt(m.resumeFromSeq))
    return `receiver wants to resume at ${m.resumeFromSeq}, retransmit buffer holds ${e.channel.oldestHeld}–${e.channel.nextOutSeq - 1}`
  return undefined
}
