/**
 * Admission of a hello: a pure function of (hello, what the receiver holds now, config) to a decision. The order of
 * the checks is part of the security model: the token first (nothing else is revealed to a peer without it), the
 * session secret before anything else about an existing session (a peer without it learns nothing about that
 * session's state), the limits last (they only matter for a session that would really start).
 */
import { negotiateVersion } from '@xbzrle/protocol'
import type { CloseCodeName } from '../codes.js'
import type { WsHello } from '../messages.js'
import { tokensEqual } from '../token.js'
import { isSafeMigrationId } from '../util.js'
import type { ReceiverConfig } from './config.js'

/** What admission needs to know about a live session. */
export interface LiveSessionView {
  readonly failed: boolean
  /** Issued in the session's first welcome. */
  readonly secret: string
  /** Started by a sender older than the session secret (no `secretAware`): it can resume without the secret. */
  readonly legacy: boolean
  /** First stream seq the session still needs. */
  readonly nextExpected: number
  /** Can the return path resume at this seq? */
  canResumeAt(returnFromSeq: number): boolean
}

/** The outcome of a session that ended recently (kept for `resumeGraceMs` so a resume can collect it). */
export interface EndedSessionView {
  readonly ok: boolean
  readonly secret: string
  readonly legacy: boolean
  /** Seq of the stream's END message. */
  readonly endSeq: number
  readonly bytes: number
  readonly message: string
}

export interface ReceiverView<S extends LiveSessionView> {
  readonly sessions: ReadonlyMap<string, S>
  readonly ended: ReadonlyMap<string, EndedSessionView>
  readonly memoryInUse: number
}

export type AdmissionConfig = Pick<
  ReceiverConfig,
  'token' | 'versions' | 'maxSessions' | 'maxSessionBytes' | 'memoryCap' | 'estimate'
>

export type Admission<S> =
  | { kind: 'refuse'; code: CloseCodeName; reason: string }
  /** A new session with this budget. */
  | { kind: 'admit'; version: number; memoryBytes: number; returnFromSeq: number }
  /** Reattach `session` on this connection. */
  | { kind: 'resume'; version: number; session: S; returnFromSeq: number }
  /** The session already finished: tell the sender again (its final ack may have been lost). */
  | { kind: 'replay-end'; version: number; endSeq: number; bytes: number }

const refuse = (code: CloseCodeName, reason: string) => ({ kind: 'refuse', code, reason }) as const

/** Did the peer get past the token check (i.e. stops counting as a pre-auth connection)? */
export const isAuthenticated = (a: Admission<unknown>): boolean =>
  a.kind !== 'refuse' || a.code !== 'BAD_TOKEN'

/** `headerToken`: from `Authorization: Bearer …`, preferred over `hello.token`. */
export function admit<S extends LiveSessionView>(
  hello: WsHello,
  headerToken: string | undefined,
  view: ReceiverView<S>,
  config: AdmissionConfig,
): Admission<S> {
  if (config.token !== undefined && !tokensEqual(config.token, headerToken ?? hello.token))
    return refuse('BAD_TOKEN', 'missing or invalid token')
  const id = hello.migrationId
  if (!isSafeMigrationId(id))
    return refuse(
      'BAD_MIGRATION_ID',
      `migration id ${JSON.stringify(id.slice(0, 130))} is not allowed: use 1-128 of [A-Za-z0-9._-], not starting with a dot`,
    )
  let version: number
  try {
    version = negotiateVersion(config.versions, hello.versions)
  } catch (err) {
    return refuse('NO_COMMON_VERSION', (err as Error).message)
  }
  const returnFromSeq = hello.returnFromSeq ?? 1
  // Only the sender that started a session holds its secret: anyone else (even with the token) cannot resume it.
  // A session started by a sender that predates the secret never learnt it: such a sender may resume without one
  // (as before the secret existed); a secret-aware session never accepts a resume without it.
  const badSecret = ({ secret, legacy }: { secret: string; legacy: boolean }) =>
    (legacy && hello.sessionSecret === undefined) || tokensEqual(secret, hello.sessionSecret)
      ? undefined
      : refuse(
          'BAD_SESSION_SECRET',
          `cannot resume migration ${id}: ${hello.sessionSecret === undefined ? 'no' : 'wrong'} session secret (only the sender that started it can resume)`,
        )

  const live = view.sessions.get(id)
  const ended = view.ended.get(id)
  if (!live && ended) {
    if (!hello.resume) return refuse('DUPLICATE_SESSION', `migration ${id} already ran`)
    const bad = badSecret(ended)
    if (bad) return bad
    if (!ended.ok) return refuse('PIPELINE_ERROR', ended.message)
    return { kind: 'replay-end', version, endSeq: ended.endSeq, bytes: ended.bytes }
  }
  if (live) {
    if (!hello.resume) return refuse('DUPLICATE_SESSION', `migration ${id} is already in progress`)
    const bad = badSecret(live)
    if (bad) return bad
    if (live.failed) return refuse('SESSION_GONE', `migration ${id} failed`)
    if (hello.resume.fromSeq > live.nextExpected)
      return refuse(
        'SESSION_GONE',
        `cannot resume: receiver needs ${live.nextExpected}, sender holds from ${hello.resume.fromSeq}`,
      )
    if (!live.canResumeAt(returnFromSeq))
      return refuse('SESSION_GONE', `cannot resume the return path at ${returnFromSeq}`)
    return { kind: 'resume', version, session: live, returnFromSeq }
  }
  // a resume from seq 1 lost nothing yet (its first welcome never arrived): start it afresh
  if (hello.resume && hello.resume.fromSeq > 1)
    return refuse('SESSION_GONE', `no session ${id} to resume (expired or unknown)`)
  if (view.sessions.size >= config.maxSessions)
    return refuse('TOO_MANY_SESSIONS', `too many sessions (${config.maxSessions})`)
  const need = Math.ceil(config.estimate(hello))
  if (need > config.maxSessionBytes)
    return refuse(
      'SESSION_TOO_LARGE',
      `session needs ${need} bytes of memory, the per-session limit is ${config.maxSessionBytes}`,
    )
  if (view.memoryInUse + need > config.memoryCap)
    return refuse(
      'OVER_MEMORY_CAP',
      `receiver memory cap reached: ${view.memoryInUse} + ${need} > ${config.memoryCap} bytes; try again later`,
    )
  return { kind: 'admit', version, memoryBytes: need, returnFromSeq }
}
