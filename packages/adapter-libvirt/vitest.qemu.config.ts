import { xbzrleLaneProject } from '../../vitest.shared.js'

// Tests that run real QEMU or libvirtd (QEMU_TESTS in vitest.shared.ts), one file at a time.
export default xbzrleLaneProject('packages/adapter-libvirt', 'adapter-libvirt', 'serial')
