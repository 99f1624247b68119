/**
 * WebAssembly SIMD kernel (assembly/xbzrle.ts, embedded as base64). The module imports its memory, so a page
 * cache can instantiate it over its own WebAssembly.Memory and have the kernel read cached pages in place.
 */
import { decodeErrorFromCode } from './errors.js'
import { XBZRLE_WASM_BASE64 } from './gen/xbzrle-wasm.js'
import type { EncodeMode, XbzrleKernel } from './kernel-types.js'

export interface KernelExports {
  encode(a: number, b: number, len: number, dst: number, dlen: number, compact: number): number
  decode(src: number, slen: number, dst: number, dlen: number): number
}

let compiled: WebAssembly.Module | null | undefined
let compileError: unknown

function base64ToBytes(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

/** The compiled module, or null when this runtime has no WebAssembly SIMD. Compiled once, synchronously. */
export function wasmModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(base64ToBytes(XBZRLE_WASM_BASE64))
    } catch (e) {
      compiled = null
      compileError = e
    }
  }
  return compiled
}

/** Why the wasm kernel is unavailable (undefined when it is available). */
export function wasmUnavailableReason(): string | undefined {
  if (typeof WebAssembly === 'undefined') return 'WebAssembly is not defined in this runtime'
  if (wasmModule() !== null) return undefined
  return compileError instanceof Error ? compileError.message : String(compileError)
}

/** Low-level binding: one instance over one memory, addressed by byte offsets into that memory. */
export class WasmBinding {
  readonly memory: WebAssembly.Memory
  /** The raw exports (for hot paths that already hold offsets). */
  readonly ex: KernelExports

  constructor(memory: WebAssembly.Memory) {
    const mod = wasmModule()
    if (mod === null) throw new Error(`wasm kernel unavailable: ${wasmUnavailableReason()}`)
    this.memory = memory
    this.ex = new WebAssembly.Instance(mod, { env: { memory } }).exports as unknown as KernelExports
  }

  encodeAt(
    oldPtr: number,
    newPtr: number,
    len: number,
    dstPtr: number,
    dlen: number,
    mode: EncodeMode,
  ): number {
    return this.ex.encode(oldPtr, newPtr, len, dstPtr, dlen, mode === 'compact' ? 1 : 0)
  }

  /** Returns the end offset, or a negative error code (see errors.ts). */
  decodeAt(srcPtr: number, slen: number, dstPtr: number, dlen: number): number {
    return this.ex.decode(srcPtr, slen, dstPtr, dlen)
  }
}

const PAGE64K = 65536

/**
 * Kernel over a private, growable memory, for arrays that do not live in a wasm memory: inputs are copied in,
 * results copied out. This is the convenient path of the top-level encode()/decode(); the page cache avoids it.
 */
class PrivateWasmKernel implements XbzrleKernel {
  readonly name = 'wasm' as const
  private readonly binding: WasmBinding
  private mem: Uint8Array

  constructor() {
    this.binding = new WasmBinding(new WebAssembly.Memory({ initial: 1 }))
    this.mem = new Uint8Array(this.binding.memory.buffer)
  }

  private reserve(bytes: number): Uint8Array {
    const have = this.binding.memory.buffer.byteLength
    if (bytes > have) {
      this.binding.memory.grow(Math.ceil((bytes - have) / PAGE64K))
      this.mem = new Uint8Array(this.binding.memory.buffer)
    }
    return this.mem
  }

  encode(old: Uint8Array, cur: Uint8Array, dst: Uint8Array, mode: EncodeMode = 'canonical'): number {
    const len = checkEncodeArgs(old, cur)
    const mem = this.reserve(2 * len + dst.length)
    mem.set(old, 0)
    mem.set(cur, len)
    const r = this.binding.encodeAt(0, len, len, 2 * len, dst.length, mode)
    if (r > 0) dst.set(mem.subarray(2 * len, 2 * len + r))
    return r
  }

  decode(delta: Uint8Array, page: Uint8Array): number {
    const len = page.length
    const mem = this.reserve(len + delta.length)
    mem.set(page, 0)
    mem.set(delta, len)
    const r = this.binding.decodeAt(len, delta.length, 0, len)
    if (r < 0) throw decodeErrorFromCode(r)
    page.set(mem.subarray(0, len))
    return r
  }
}

/**
 * Kernel bound to a fixed memory (a page cache's). Arrays that lie in that memory are passed by offset with no
 * copy; anything else goes through the private kernel.
 */
export class BoundWasmKernel implements XbzrleKernel {
  readonly name = 'wasm' as const
  readonly binding: WasmBinding
  private readonly buffer: ArrayBufferLike

  constructor(memory: WebAssembly.Memory) {
    this.binding = new WasmBinding(memory)
    // Never grown (the cache sizes it once), so this buffer stays attached for the memory's lifetime.
    this.buffer = memory.buffer
  }

  encode(old: Uint8Array, cur: Uint8Array, dst: Uint8Array, mode: EncodeMode = 'canonical'): number {
    const b = this.buffer
    if (old.buffer !== b || cur.buffer !== b || dst.buffer !== b)
      return privateKernel().encode(old, cur, dst, mode)
    const len = checkEncodeArgs(old, cur)
    return this.binding.encodeAt(old.byteOffset, cur.byteOffset, len, dst.byteOffset, dst.length, mode)
  }

  decode(delta: Uint8Array, page: Uint8Array): number {
    const b = this.buffer
    if (delta.buffer !== b || page.buffer !== b) return privateKernel().decode(delta, page)
    const r = this.binding.decodeAt(delta.byteOffset, delta.length, page.byteOffset, page.length)
    if (r < 0) throw decodeErrorFromCode(r)
    return r
  }
}

function checkEncodeArgs(old: Uint8Array, cur: Uint8Array): number {
  const len = cur.length
  if (old.length !== len)
    throw new RangeError(`xbzrle encode: old page is ${old.length} bytes, new is ${len}`)
  if (len % 8 !== 0) throw new RangeError(`xbzrle encode: page length ${len} is not a multiple of 8`)
  return len
}

let shared: PrivateWasmKernel | undefined

function privateKernel(): PrivateWasmKernel {
  shared ??= new PrivateWasmKernel()
  return shared
}

/** The wasm kernel over its private memory; throws if wasm is unavailable. */
export function wasmKernel(): XbzrleKernel {
  return privateKernel()
}
