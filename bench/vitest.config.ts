import { xbzrleProject } from '../vitest.shared.js'

// Only the unit tests of the bench's pure parts (src/*.test.ts); no benchmark runs under vitest.
export default xbzrleProject('bench', 'parallel')
