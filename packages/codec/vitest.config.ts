import { xbzrleProject } from '../../vitest.shared.js'

export default xbzrleProject('codec', 'parallel')
