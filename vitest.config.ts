import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Each entry's vitest config is xbzrleProject(name, lane) from vitest.shared.ts. `bench` runs only the unit
    // tests of the benchmark harness's pure parts, never a benchmark. The CLI has two projects: `cli` and
    // `cli-packaging` (compat and consumability), which run in different lanes.
    projects: ['packages/*', 'apps/cli/vitest.config.ts', 'apps/cli/vitest.packaging.config.ts', 'bench'],
  },
})
