import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Each entry's vitest config is from vitest.shared.ts (lanes: see there). `bench` runs only the unit tests of
    // the benchmark harness's pure parts, never a benchmark. A vitest.qemu.config.ts holds a workspace's tests
    // that start QEMU or libvirtd.
    projects: [
      'packages/*',
      'apps/cli',
      'bench',
      'packages/adapter-libvirt/vitest.qemu.config.ts',
      'apps/cli/vitest.qemu.config.ts',
    ],
  },
})
