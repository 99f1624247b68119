// The pre-auth limits as pure decisions: which connection goes when the unauthenticated slots are full.
import { expect, test } from 'vitest'
import { acceptConnection, pickVictim } from './preauth.js'

const limits = { maxPreAuth: 2, maxConnections: 5 }

// [case, state now, expected decision]
const cases = [
  ['under both limits: accepted, nobody evicted', [false, 1, 3], [false, true]],
  [
    'pre-auth slots full: the oldest unauthenticated one is evicted to make room',
    [false, 2, 2],
    [true, true],
  ],
  ['connection limit reached: refused', [false, 1, 5], [false, false]],
  [
    'both full: one evicted (it still counts until it has closed), the new one refused',
    [false, 2, 5],
    [true, false],
  ],
  ['a closing receiver accepts nothing and evicts nobody', [true, 0, 0], [false, false]],
] as const

test.each(cases)('%s', (_name, [closing, preAuth, connections], [evict, accept]) => {
  expect(acceptConnection({ closing, preAuth, connections }, limits)).toEqual({ evict, accept })
})

test('victim: the oldest socket that never upgraded, else the oldest one', () => {
  const a = { name: 'a', upgraded: true }
  const b = { name: 'b', upgraded: false }
  const c = { name: 'c', upgraded: false }
  expect(pickVictim([a, b, c])).toBe(b)
  expect(pickVictim([a, { name: 'd', upgraded: true }])).toBe(a)
  expect(pickVictim([])).toBeUndefined()
})
