/**
 * Reconnect policy as a pure function: after a lost connection, wait (exponential backoff with jitter) or give up.
 * The time limit counts from when the connection was last good (a welcome), so a sender that keeps getting back
 * in for a moment does not give up, and one that never gets back in gives up on time.
 */
import type { ReconnectPolicy } from './types.js'

export const RECONNECT_DEFAULTS = { initialDelayMs: 100, maxDelayMs: 5000, timeLimitMs: 30_000, jitter: 0.5 }

export interface ReconnectState {
  /** Failed attempts since the last welcome (the backoff exponent). */
  readonly failures: number
  /** When the connection was last lost after a welcome, or the first loss (ms, same clock as `now`). */
  readonly lostSince: number | undefined
}
export const INITIAL_RECONNECT_STATE: ReconnectState = { failures: 0, lostSince: undefined }

export type ReconnectDecision =
  | { kind: 'give-up'; why: 'fatal' | 'disabled' }
  | { kind: 'give-up'; why: 'time-limit'; limitMs: number }
  /** `delayMs` is the backoff (reported in the event); `waitMs` is that, cut to the time left before the limit. */
  | { kind: 'retry'; delayMs: number; waitMs: number; state: ReconnectState }

/**
 * @param outcome how the attempt ended: `fatal` (a refusal or error that retrying cannot fix), `welcomed` (it had
 *   been connected, so the backoff starts over)
 * @param random a number in [0, 1) for the jitter
 */
export function nextReconnect(
  state: ReconnectState,
  outcome: { readonly fatal: boolean; readonly welcomed: boolean },
  policy: ReconnectPolicy | false,
  now: number,
  random: number,
): ReconnectDecision {
  if (outcome.fatal) return { kind: 'give-up', why: 'fatal' }
  if (policy === false) return { kind: 'give-up', why: 'disabled' }
  const p = { ...RECONNECT_DEFAULTS, ...stripUndefined(policy) }
  const failures = outcome.welcomed ? 0 : state.failures
  const lostSince = outcome.welcomed ? now : (state.lostSince ?? now)
  if (now - lostSince > p.timeLimitMs) return { kind: 'give-up', why: 'time-limit', limitMs: p.timeLimitMs }
  const base = Math.min(p.maxDelayMs, p.initialDelayMs * 2 ** failures)
  const delayMs = Math.round(base * (1 - p.jitter * random))
  // one ms past the limit, so the next loss is past it and gives up instead of retrying at once
  const waitMs = Math.min(delayMs, Math.max(0, lostSince + p.timeLimitMs - now) + 1)
  return { kind: 'retry', delayMs, waitMs, state: { failures: failures + 1, lostSince } }
}

function stripUndefined(policy: ReconnectPolicy): Partial<typeof RECONNECT_DEFAULTS> {
  return Object.fromEntries(Object.entries(policy).filter(([, v]) => v !== undefined))
}
