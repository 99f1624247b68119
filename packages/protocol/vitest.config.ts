import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@xbzrle/source'] },
  ssr: { resolve: { conditions: ['@xbzrle/source'], externalConditions: ['@xbzrle/source'] } },
  test: { name: 'protocol', include: ['src/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 120_000 },
})
