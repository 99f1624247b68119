import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const dirs = new Set<string>()
let exitHookInstalled = false

/**
 * Create a fresh temporary directory (under os.tmpdir()). It is removed by `removeTmpDirs()`, by
 * `cleanupTestkit()`, or when the process exits, unless `keep` is set.
 */
export function tmpDir(prefix = 'xbzrle-testkit-', options: { keep?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  if (!options.keep) {
    dirs.add(dir)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      process.once('exit', () => removeTmpDirsSync())
    }
  }
  return dir
}

/** Remove one directory created by tmpDir() now. */
export function removeTmpDir(dir: string): void {
  dirs.delete(dir)
  rmSync(dir, { recursive: true, force: true })
}

function removeTmpDirsSync(): void {
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {
      // best effort at exit
    }
  }
  dirs.clear()
}

/** Remove every directory created by tmpDir() so far (not the ones created with keep). */
export async function removeTmpDirs(): Promise<void> {
  removeTmpDirsSync()
}
