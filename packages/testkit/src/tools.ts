/**
 * Tool discovery and test gates. Naming: `find*` returns a path or undefined, `has*` a boolean, `require*(ctx)`
 * is a gate for a test: true when everything is there, otherwise it fails the test under CI=true and skips it
 * visibly (ctx.skip) anywhere else.
 */
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

/** The part of a vitest TestContext that the require* gates use. */
export interface SkipContext {
  skip: (note?: string) => void
}

/** Absolute path of an executable: `name` itself when it contains a slash, else the first hit on $PATH. */
export function findTool(name: string): string | undefined {
  const candidates = name.includes('/')
    ? [name]
    : (process.env.PATH ?? '')
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, name))
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {
      // keep looking
    }
  }
  return undefined
}

/** True if `name` is an executable (see findTool). */
export function hasTool(name: string): boolean {
  return findTool(name) !== undefined
}

/**
 * The gate behind every require*: with CI=true it throws (the test fails, never silently skips); otherwise it
 * prints a visible warning, calls `ctx.skip(reason)` and returns false. Use it for your own preconditions:
 * `if (!hasBuiltCli) return skipOrFail(ctx, 'needs the built CLI (npx tsc -b apps/cli)')`.
 */
export function skipOrFail(ctx: SkipContext, reason: string): false {
  if (process.env.CI === 'true') throw new Error(`${reason}; CI=true, so this is a failure, not a skip`)
  console.warn(`[@xbzrle/testkit] SKIP: ${reason}`)
  ctx.skip(reason)
  return false
}

/** Gate for a test that runs the executable `name` (installed by the Debian package `aptPackage`). */
export function requireTool(ctx: SkipContext, name: string, aptPackage: string): boolean {
  if (hasTool(name)) return true
  return skipOrFail(ctx, `test needs ${name} (apt-get install ${aptPackage})`)
}

/** QEMU binary used by the harness (override with XBZRLE_QEMU). */
export function qemuBinary(): string {
  return process.env.XBZRLE_QEMU ?? 'qemu-system-x86_64'
}

/** True if qemu-system-x86_64 (or $XBZRLE_QEMU) is on PATH. */
export function hasQemu(): boolean {
  return hasTool(qemuBinary())
}

/** What a real-QEMU test needs that is missing on this machine (empty when everything is there). */
export function missingQemuTools(): string[] {
  const missing: string[] = []
  if (!hasQemu()) missing.push(qemuBinary())
  if (!hasTool('gcc')) missing.push('gcc')
  return missing
}

/**
 * Gate for real-QEMU tests: true when QEMU and gcc (for the test guest) are available; otherwise see
 * skipOrFail (fails under CI=true, skips visibly elsewhere).
 */
export function requireQemu(ctx: SkipContext): boolean {
  const missing = missingQemuTools()
  if (missing.length === 0) return true
  return skipOrFail(
    ctx,
    `real-QEMU test needs ${missing.join(' and ')} (apt-get install qemu-system-x86 qemu-utils gcc)`,
  )
}
