/**
 * Page-key and page-record-header coding of v1 (SPEC.md §5.2). Exact Number arithmetic only: page indexes go up
 * to 2^40 − 1 and `pageIndex * pageSize` up to 2^56, so nothing here uses 32-bit operators on those values.
 */

/** zigzag: 0 → 0, −1 → 1, 1 → 2, −2 → 3 … Exact for |n| ≤ 2^52. */
export function zigzag(n: number): number {
  return n >= 0 ? n * 2 : -n * 2 - 1
}

/** Inverse of `zigzag`; exact for every varint value (≤ 2^53 − 1). */
export function unzigzag(z: number): number {
  return z % 2 === 0 ? z / 2 : -(z + 1) / 2
}

/** The pageIndex field of a keyed frame: `zigzag(pageIndex − (prev + 1))`, prev = −1 at the start of a batch. */
export function pageIndexField(pageIndex: number, prev: number): number {
  return zigzag(pageIndex - (prev + 1))
}

// `pageIndex * pageSize` (pageSize a power of two ≤ 65536) as two 32-bit halves, without allocating.
// span = pages per 4 GiB = 2^(32 − log2 pageSize), an integer; both halves are exact.
const offsetHi = (pageIndex: number, pageSize: number) => Math.floor(pageIndex / (2 ** 32 / pageSize))
const offsetLo = (pageIndex: number, pageSize: number) => (pageIndex % (2 ** 32 / pageSize)) * pageSize

/**
 * The `flags` of a header that can be derived, i.e. `hdr` is exactly 8 bytes equal to
 * `be64(pageIndex * pageSize + flags)` with `0 ≤ flags < pageSize`; otherwise −1 (the header goes raw).
 */
export function derivableFlags(hdr: Uint8Array, pageIndex: number, pageSize: number): number {
  if (hdr.length !== 8) return -1
  const hi = ((hdr[0]! << 24) | (hdr[1]! << 16) | (hdr[2]! << 8) | hdr[3]!) >>> 0
  const lo = ((hdr[4]! << 24) | (hdr[5]! << 16) | (hdr[6]! << 8) | hdr[7]!) >>> 0
  const flags = lo % pageSize
  return hi === offsetHi(pageIndex, pageSize) && lo - flags === offsetLo(pageIndex, pageSize) ? flags : -1
}

/** Writes the derived header `be64(pageIndex * pageSize + flags)` into `out[at .. at + 8)`. */
export function writeDerivedHdr(
  out: Uint8Array,
  at: number,
  pageIndex: number,
  pageSize: number,
  flags: number,
): void {
  const hi = offsetHi(pageIndex, pageSize)
  const lo = offsetLo(pageIndex, pageSize) + flags // < 2^32: a multiple of pageSize plus flags < pageSize
  out[at] = hi >>> 24
  out[at + 1] = (hi >>> 16) & 0xff
  out[at + 2] = (hi >>> 8) & 0xff
  out[at + 3] = hi & 0xff
  out[at + 4] = lo >>> 24
  out[at + 5] = (lo >>> 16) & 0xff
  out[at + 6] = (lo >>> 8) & 0xff
  out[at + 7] = lo & 0xff
}
