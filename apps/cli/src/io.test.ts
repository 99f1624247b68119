import { describe, expect, it } from 'vitest'
import { defaultThreads } from './io.js'

describe('defaultThreads', () => {
  it('uses no worker below 4 cores (QEMU needs the other one), else cores - 1, at most 4', () => {
    expect([1, 2, 3].map((n) => defaultThreads(n))).toEqual([0, 0, 0])
    expect([4, 5, 8, 64].map((n) => defaultThreads(n))).toEqual([3, 4, 4, 4])
  })

  it('from a regular file to a regular file (no QEMU beside it): one worker on 2 and 3 cores too', () => {
    expect([1, 2, 3].map((n) => defaultThreads(n, true))).toEqual([0, 1, 1])
    expect([4, 5, 8, 64].map((n) => defaultThreads(n, true))).toEqual([3, 4, 4, 4])
  })
})
