import { xbzrleLaneProject } from '../../vitest.shared.js'

// Tests that start no QEMU; vitest.qemu.config.ts has the others.
export default xbzrleLaneProject('packages/adapter-libvirt', 'adapter-libvirt', 'parallel')
