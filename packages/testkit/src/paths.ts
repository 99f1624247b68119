import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Root of the @xbzrle/testkit package (works from src/ and from dist/). */
export const packageDir: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'guest'))) return dir
    dir = dirname(dir)
  }
  throw new Error('@xbzrle/testkit: cannot locate the package directory (guest/ sources missing)')
})()

/** Directory holding the test guest sources. */
export const guestSourceDir: string = join(packageDir, 'guest')
