// The pre-auth limits as pure decisions: which connection goes when the unauthenticated slots are full.
import { expect, test } from 'vitest'
import { acceptConnection, pickVictim } from './preauth.js'

const limits = { maxPreAuth: 2, maxConnections: 5 }

test('under both limits: accepted, nobody evicted', () => {
  expect(acceptConnection({ closing: false, preAuth: 1, connections: 3 }, limits)).toEqual({
    evict: false,
    accept: true,
  })
})

test('pre-auth slots full: the oldest unauthenticated one is evicted to make room', () => {
  expect(acceptConnection({ closing: false, preAuth: 2, connections: 2 }, limits)).toEqual({
    evict: true,
    accept: true,
  })
})

test('connection limit reached: refused (an eviction still happens when the pre-auth slots are full)', () => {
  expect(acceptConnection({ closing: false, preAuth: 1, connections: 5 }, limits)).toEqual({
    evict: false,
    accept: false,
  })
  expect(acceptConnection({ closing: false, preAuth: 2, connections: 5 }, limits)).toEqual({
    evict: true,
    accept: false,
  })
})

test('a closing receiver accepts nothing and evicts nobody', () => {
  expect(acceptConnection({ closing: true, preAuth: 0, connections: 0 }, limits)).toEqual({
    evict: false,
    accept: false,
  })
})

test('victim: the oldest socket that never upgraded, else the oldest one', () => {
  const a = { name: 'a', upgraded: true }
  const b = { name: 'b', upgraded: false }
  const c = { name: 'c', upgraded: false }
  expect(pickVictim([a, b, c])).toBe(b)
  expect(pickVictim([a, { name: 'd', upgraded: true }])).toBe(a)
  expect(pickVictim([])).toBeUndefined()
})
