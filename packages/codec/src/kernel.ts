/**
 * Kernel selection: wasm when it compiles and instantiates, else TypeScript. `XBZRLE_KERNEL=wasm|ts` forces one;
 * forcing wasm where it is unavailable is an error rather than a silent slowdown.
 */
import { tsKernel } from './kernel-ts.js'
import type { EncodeMode, KernelName, XbzrleKernel } from './kernel-types.js'
import { wasmKernel, wasmUnavailableReason } from './kernel-wasm.js'

export type Env = Record<string, string | undefined>

function processEnv(): Env {
  const p = (globalThis as { process?: { env?: Env } }).process
  return p?.env ?? {}
}

/** Decides which kernel to use for a given environment (injectable for tests). */
export function selectKernelName(env: Env = processEnv()): KernelName {
  const forced = env.XBZRLE_KERNEL
  if (forced === undefined || forced === '') return wasmUnavailableReason() === undefined ? 'wasm' : 'ts'
  if (forced === 'ts') return 'ts'
  if (forced === 'wasm') {
    const why = wasmUnavailableReason()
    if (why !== undefined) throw new Error(`XBZRLE_KERNEL=wasm but the wasm kernel is unavailable: ${why}`)
    return 'wasm'
  }
  throw new Error(`XBZRLE_KERNEL must be "wasm" or "ts", got ${JSON.stringify(forced)}`)
}

/** A specific kernel (tests run every suite over both). Throws if `wasm` is asked for and unavailable. */
export function getKernel(name: KernelName): XbzrleKernel {
  if (name === 'ts') return tsKernel
  const why = wasmUnavailableReason()
  if (why !== undefined) throw new Error(`wasm kernel unavailable: ${why}`)
  return wasmKernel()
}

let selected: KernelName | undefined

/** Name of the kernel the top-level functions and new caches use (chosen once, on first use). */
export function kernelName(): KernelName {
  selected ??= selectKernelName()
  return selected
}

/** The selected kernel. */
export function defaultKernel(): XbzrleKernel {
  return getKernel(kernelName())
}

/**
 * Encodes `cur` against `old` into `dst` (at most `dst.length` bytes). Returns length > 0, 0 if unchanged,
 * -1 on overflow. Pages may have any length that is a multiple of 8.
 */
export function encode(
  old: Uint8Array,
  cur: Uint8Array,
  dst: Uint8Array,
  mode: EncodeMode = 'canonical',
): number {
  return defaultKernel().encode(old, cur, dst, mode)
}

/** Validates and applies `delta` to `page` in place; throws XbzrleDecodeError (page untouched) if invalid. */
export function decode(delta: Uint8Array, page: Uint8Array): number {
  return defaultKernel().decode(delta, page)
}
