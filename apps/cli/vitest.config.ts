import { xbzrleProject } from '../../vitest.shared.js'

/** The CLI's packaging tests: they pack, install and run releases and tarballs, and start no QEMU. */
export const PACKAGING_TESTS = ['src/compat.test.ts', 'src/consumability.test.ts']

// Everything else: many of these run real QEMU and libvirtd (see vitest.shared.ts).
export default xbzrleProject('cli', 'serial', { exclude: PACKAGING_TESTS })
