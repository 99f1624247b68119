/**
 * The one vitest project preset of this monorepo. Every workspace's vitest.config.ts is
 * `export default xbzrleProject('<name>', lane)`; the name is what `npx vitest run --project <name>` selects.
 * Tests live next to the code (`src/**\/*.test.ts`) and run from `src/` through the `@xbzrle/source` export
 * condition, so no build is needed.
 *
 * Two lanes, because vitest's default (cores − 1 workers) runs every file one after the other on a 2-core CI
 * machine:
 * - `parallel` (first): tests that start no QEMU and no libvirtd. Two files at a time.
 * - `serial` (after it): tests that run real QEMU guests or libvirtd, listed in {@link QEMU_TESTS}. One file at a
 *   time, so a TCG guest never shares the machine with another test and the migration tests' timing stays what
 *   it was measured at. A workspace with both kinds has a second project, `<name>-qemu`
 *   (vitest.qemu.config.ts). testkit/src/lanes.test.ts checks that every test starting QEMU is listed.
 */
import { defineProject } from 'vitest/config'

const SOURCE_CONDITION = '@xbzrle/source'

export type Lane = 'parallel' | 'serial'

const LANES: Record<Lane, { groupOrder: number; maxWorkers: number }> = {
  parallel: { groupOrder: 0, maxWorkers: 2 },
  serial: { groupOrder: 1, maxWorkers: 1 },
}

/** Per workspace (path from the repo root): its test files that start QEMU or libvirtd. testkit's are all. */
export const QEMU_TESTS: Record<string, string[]> = {
  'apps/cli': [
    'src/base-qemu.test.ts',
    'src/libvirt-helper.virsh.test.ts',
    'src/migration.test.ts',
    'src/observe/observe.qemu.test.ts',
    'src/proxy.test.ts',
    'src/ws.test.ts',
  ],
  'packages/adapter-libvirt': [
    'src/filter/decoder-passes.test.ts',
    'src/filter/qemu-streams.test.ts',
    'src/libvirt/proxy.test.ts',
    'src/libvirt/save-image.test.ts',
    'src/libvirt/virsh-migrate.test.ts',
  ],
  'packages/testkit': ['src/**/*.test.ts'],
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

/** The project of a workspace's tests that start no QEMU (`parallel`) or only those that do (`serial`). */
export function xbzrleLaneProject(workspace: string, name: string, lane: Lane) {
  const qemu = QEMU_TESTS[workspace] ?? []
  return lane === 'serial'
    ? xbzrleProject(`${name}-qemu`, 'serial', { include: qemu })
    : xbzrleProject(name, 'parallel', { exclude: qemu })
}
