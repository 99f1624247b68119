/**
 * The one vitest project preset of this monorepo. Every workspace's vitest.config.ts is
 * `export default xbzrleProject('<name>')`; the name is what `npx vitest run --project <name>` selects.
 * Tests live next to the code (`src/**\/*.test.ts`) and run from `src/` through the `@xbzrle/source` export
 * condition, so no build is needed.
 */
import { defineProject } from 'vitest/config'

const SOURCE_CONDITION = '@xbzrle/source'

export function xbzrleProject(name: string) {
  return defineProject({
    resolve: { conditions: [SOURCE_CONDITION] },
    ssr: { resolve: { conditions: [SOURCE_CONDITION], externalConditions: [SOURCE_CONDITION] } },
    test: { name, include: ['src/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 120_000 },
  })
}
