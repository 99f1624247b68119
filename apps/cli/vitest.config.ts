import { xbzrleLaneProject } from '../../vitest.shared.js'

// The CLI's tests that start no QEMU; apps/cli/vitest.qemu.config.ts has the others.
export default xbzrleLaneProject('apps/cli', 'cli', 'parallel')
