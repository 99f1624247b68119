import { xbzrleProject } from '../../vitest.shared.js'
import { PACKAGING_TESTS } from './vitest.config.js'

// compat and consumability mostly wait on npm and builds, so they run beside the unit tests.
export default xbzrleProject('cli-packaging', 'parallel', { include: PACKAGING_TESTS })
