/**
 * The one vitest project preset of this monorepo. Every workspace's vitest.config.ts is
 * `export default xbzrleProject('<name>', lane)`; the name is what `npx vitest run --project <name>` selects.
 * Tests live next to the code (`src/**\/*.test.ts`) and run from `src/` through the `@xbzrle/source` export
 * condition, so no build is needed.
 *
 * Two lanes, because vitest's default (cores − 1 workers) runs every file one after the other on a 2-core CI
 * machine:
 * - `parallel` (first): tests that start no QEMU or libvirtd: pure units, and the packaging tests that mostly
 *   wait on npm. Two files at a time.
 * - `serial` (after it): tests that run real QEMU guests or libvirtd. One file at a time, so a TCG guest never
 *   shares its core with another guest and the migration tests' timing stays what it was measured at.
 */
import { defineProject } from 'vitest/config'

const SOURCE_CONDITION = '@xbzrle/source'

export type Lane = 'parallel' | 'serial'

const LANES: Record<Lane, { groupOrder: number; maxWorkers: number }> = {
  parallel: { groupOrder: 0, maxWorkers: 2 },
  serial: { groupOrder: 1, maxWorkers: 1 },
}

export function xbzrleProject(
  name: string,
  lane: Lane,
  files: { include?: string[]; exclude?: string[] } = {},
) {
  const { groupOrder, maxWorkers } = LANES[lane]
  return defineProject({
    resolve: { conditions: [SOURCE_CONDITION] },
    ssr: { resolve: { conditions: [SOURCE_CONDITION], externalConditions: [SOURCE_CONDITION] } },
    test: {
      name,
      include: files.include ?? ['src/**/*.test.ts'],
      exclude: [...(files.exclude ?? []), '**/node_modules/**'],
      testTimeout: 60_000,
      hookTimeout: 180_000,
      maxWorkers,
      sequence: { groupOrder },
    },
  })
}
