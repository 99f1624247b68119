import { xbzrleLaneProject } from '../../vitest.shared.js'

// The CLI's tests that run real QEMU or libvirtd (QEMU_TESTS in vitest.shared.ts), one file at a time.
export default xbzrleLaneProject('apps/cli', 'cli', 'serial')
