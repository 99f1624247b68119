import { xbzrleProject } from '../../vitest.shared.js'

export default xbzrleProject('adapter-ws', 'parallel')
