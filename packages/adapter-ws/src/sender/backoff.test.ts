// The reconnect policy is a pure function of (state, how the attempt ended, policy, clock, random).
import { describe, expect, test } from 'vitest'
import {
  INITIAL_RECONNECT_STATE,
  nextReconnect,
  type ReconnectDecision,
  type ReconnectState,
} from './backoff.js'
import type { ReconnectPolicy } from './types.js'

const lost = { fatal: false, welcomed: false }
const policy: ReconnectPolicy = { initialDelayMs: 100, maxDelayMs: 1000, timeLimitMs: 10_000, jitter: 0.5 }

/** Runs `k` failed attempts in a row at clock `now`, returning each decision. */
function failures(k: number, p: ReconnectPolicy = policy, random = 0, now = 1000): ReconnectDecision[] {
  let state: ReconnectState = INITIAL_RECONNECT_STATE
  const out: ReconnectDecision[] = []
  for (let i = 0; i < k; i++) {
    const d = nextReconnect(state, lost, p, now, random)
    out.push(d)
    if (d.kind === 'retry') state = d.state
  }
  return out
}
const delays = (ds: ReconnectDecision[]) => ds.map((d) => (d.kind === 'retry' ? d.delayMs : d.why))

describe('backoff', () => {
  test('doubles from initialDelayMs up to maxDelayMs', () => {
    expect(delays(failures(6))).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  test('jitter takes a random fraction off each delay (random 1 → up to jitter × delay)', () => {
    expect(delays(failures(3, policy, 0.999_999))).toEqual([50, 100, 200])
    expect(delays(failures(2, { ...policy, jitter: 0 }, 0.9))).toEqual([100, 200])
    expect(delays(failures(1, policy, 0.5))).toEqual([75])
  })

  test('defaults: 100 ms, ×2, 5 s at most, 30 s time limit, jitter 0.5 (undefined fields take the default)', () => {
    expect(delays(failures(8, {}, 0))).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000])
    expect(delays(failures(1, { initialDelayMs: undefined, jitter: undefined }, 0.999_999))).toEqual([50])
    const late = nextReconnect({ failures: 3, lostSince: 0 }, lost, {}, 30_001, 0)
    expect(late).toEqual({ kind: 'give-up', why: 'time-limit', limitMs: 30_000 })
  })

  test('a connection that got a welcome starts the backoff and the time limit over', () => {
    const state = { failures: 5, lostSince: 0 }
    const d = nextReconnect(state, { fatal: false, welcomed: true }, policy, 50_000, 0)
    expect(d).toEqual({ kind: 'retry', delayMs: 100, waitMs: 100, state: { failures: 1, lostSince: 50_000 } })
  })
})

describe('giving up', () => {
  test('fatal outcomes and reconnect: false give up at once', () => {
    expect(nextReconnect(INITIAL_RECONNECT_STATE, { fatal: true, welcomed: true }, policy, 0, 0)).toEqual({
      kind: 'give-up',
      why: 'fatal',
    })
    expect(nextReconnect(INITIAL_RECONNECT_STATE, lost, false, 0, 0)).toEqual({
      kind: 'give-up',
      why: 'disabled',
    })
  })

  test('the time limit counts from the first loss; the last wait is cut to the time left (+1 ms)', () => {
    const first = nextReconnect(INITIAL_RECONNECT_STATE, lost, policy, 5000, 0)
    expect(first).toMatchObject({ kind: 'retry', state: { lostSince: 5000 } })
    const state = { failures: 4, lostSince: 5000 }
    // 9 950 ms after the loss: a 1000 ms backoff is cut to the 50 ms left, +1
    expect(nextReconnect(state, lost, policy, 14_950, 0)).toEqual({
      kind: 'retry',
      delayMs: 1000,
      waitMs: 51,
      state: { failures: 5, lostSince: 5000 },
    })
    expect(nextReconnect(state, lost, policy, 15_000, 0).kind).toBe('retry') // exactly at the limit
    expect(nextReconnect(state, lost, policy, 15_001, 0)).toEqual({
      kind: 'give-up',
      why: 'time-limit',
      limitMs: 10_000,
    })
  })
})
