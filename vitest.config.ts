import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Each entry's vitest.config.ts is xbzrleProject(name) from vitest.shared.ts. `bench` runs only the unit
    // tests of the benchmark harness's pure parts, never a benchmark.
    projects: ['packages/*', 'apps/*', 'bench'],
  },
})
