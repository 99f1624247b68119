import { xbzrleProject } from '../../vitest.shared.js'

export default xbzrleProject('adapter-libvirt', 'serial')
