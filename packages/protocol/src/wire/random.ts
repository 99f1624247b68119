import { closeSync, openSync, readSync } from 'node:fs'

/**
 * `n` bytes from the kernel's CSPRNG, read from /dev/urandom. Not node:crypto's randomBytes for a stream id: loading
 * node:crypto (some twenty internal modules, 3-5 ms) was the largest single cost of writing a v3 header at the
 * start of `xbzrle -c`, before its first byte. node:crypto is the fallback where /dev/urandom cannot be read.
 */
export function kernelRandomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n)
  let fd: number | undefined
  try {
    fd = openSync('/dev/urandom', 'r')
    for (let got = 0; got < n; ) {
      const r = readSync(fd, out, got, n - got, null)
      if (r <= 0) throw new Error('short read from /dev/urandom')
      got += r
    }
    return out
  } catch {
    return new Uint8Array(process.getBuiltinModule('node:crypto').randomBytes(n))
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
