// XBZRLE kernel in AssemblyScript, compiled with SIMD (see scripts/build-wasm.mjs).
// Pointer-only code: no allocation, no runtime. Memory is imported so the page cache's WebAssembly.Memory is the
// kernel's memory and cached pages are read where they lie.
// Must produce exactly the bytes of src/kernel-ts.ts (tests compare both with a byte-loop model).

const MAX_RUN: i32 = 0x3fff;
const FOLD_MAX: i32 = 2;

// First index >= i where a and b differ, or len.
function eqEnd(a: usize, b: usize, i: i32, len: i32): i32 {
  // 64 bytes per step: OR of four XORs, one any_true. Unchanged pages spend all their time here.
  while (i + 64 <= len) {
    const p = <usize>i;
    const x0 = v128.xor(v128.load(a + p), v128.load(b + p));
    const x1 = v128.xor(v128.load(a + p, 16), v128.load(b + p, 16));
    const x2 = v128.xor(v128.load(a + p, 32), v128.load(b + p, 32));
    const x3 = v128.xor(v128.load(a + p, 48), v128.load(b + p, 48));
    if (v128.any_true(v128.or(v128.or(x0, x1), v128.or(x2, x3)))) break;
    i += 64;
  }
  while (i + 16 <= len) {
    const m = i8x16.bitmask(i8x16.eq(v128.load(a + <usize>i), v128.load(b + <usize>i)));
    if (m != 0xffff) return i + ctz<i32>(~m);
    i += 16;
  }
  while (i + 8 <= len) {
    const x = load<u64>(a + <usize>i) ^ load<u64>(b + <usize>i);
    if (x != 0) return i + <i32>(ctz<u64>(x) >> 3);
    i += 8;
  }
  while (i < len && load<u8>(a + <usize>i) == load<u8>(b + <usize>i)) i++;
  return i;
}

// First index >= i where a and b are equal, or len.
function neEnd(a: usize, b: usize, i: i32, len: i32): i32 {
  // Most changed runs are short (scattered writes): look at one vector before the unrolled loop.
  if (i + 16 <= len) {
    const m = i8x16.bitmask(i8x16.eq(v128.load(a + <usize>i), v128.load(b + <usize>i)));
    if (m != 0) return i + ctz<i32>(m);
    i += 16;
  }
  while (i + 64 <= len) {
    const p = <usize>i;
    const e0 = i8x16.eq(v128.load(a + p), v128.load(b + p));
    const e1 = i8x16.eq(v128.load(a + p, 16), v128.load(b + p, 16));
    const e2 = i8x16.eq(v128.load(a + p, 32), v128.load(b + p, 32));
    const e3 = i8x16.eq(v128.load(a + p, 48), v128.load(b + p, 48));
    if (v128.any_true(v128.or(v128.or(e0, e1), v128.or(e2, e3)))) break;
    i += 64;
  }
  while (i + 16 <= len) {
    const m = i8x16.bitmask(i8x16.eq(v128.load(a + <usize>i), v128.load(b + <usize>i)));
    if (m != 0) return i + ctz<i32>(m);
    i += 16;
  }
  while (i < len && load<u8>(a + <usize>i) != load<u8>(b + <usize>i)) i++;
  return i;
}

// @ts-ignore: decorator
@inline function putUleb(d: usize, o: i32, v: i32): i32 {
  if (v < 0x80) {
    store<u8>(d + <usize>o, <u8>v);
    return o + 1;
  }
  store<u8>(d + <usize>o, <u8>((v & 0x7f) | 0x80));
  store<u8>(d + <usize>o + 1, <u8>(v >> 7));
  return o + 2;
}

// @ts-ignore: decorator
@inline function ul(v: i32): i32 {
  return v < 0x80 ? 1 : 2;
}

// QEMU's scalar encoder, check for check, including the top-of-loop `d + 2 > dlen`.
function encodeCanonical(a: usize, b: usize, len: i32, dst: usize, dlen: i32): i32 {
  let i: i32 = 0;
  let d: i32 = 0;
  while (i < len) {
    if (d + 2 > dlen) return -1;
    const j = eqEnd(a, b, i, len);
    if (j - i == len) return 0;
    if (j == len) return d;
    const z = j - i;
    if (z > MAX_RUN) return -1;
    d = putUleb(dst, d, z);
    if (d + 2 > dlen) return -1;
    const k = neEnd(a, b, j, len);
    const nz = k - j;
    if (nz > MAX_RUN) return -1;
    d = putUleb(dst, d, nz);
    if (d + nz > dlen) return -1;
    memory.copy(dst + <usize>d, b + <usize>j, <usize>nz);
    d += nz;
    i = k;
  }
  return d;
}

function emitPair(b: usize, dst: usize, d: i32, dlen: i32, z: i32, s: i32, e: i32): i32 {
  const nz = e - s;
  if (z > MAX_RUN || nz > MAX_RUN) return -1;
  if (d + ul(z) + ul(nz) + nz > dlen) return -1;
  d = putUleb(dst, d, z);
  d = putUleb(dst, d, nz);
  memory.copy(dst + <usize>d, b + <usize>s, <usize>nz);
  return d + nz;
}

// Same greedy folding as kernel-ts.ts encodeCompact.
function encodeCompact(a: usize, b: usize, len: i32, dst: usize, dlen: i32): i32 {
  const j0 = eqEnd(a, b, 0, len);
  if (j0 == len) return 0;
  let pz = j0;
  let ps = j0;
  let pe = neEnd(a, b, j0, len);
  let d: i32 = 0;
  while (pe < len) {
    const j = eqEnd(a, b, pe, len);
    if (j == len) break;
    const k = j - pe;
    const e = neEnd(a, b, j, len);
    if (k <= FOLD_MAX) {
      const merged = e - ps;
      const x = pe - ps;
      const y = e - j;
      if (merged <= MAX_RUN && merged + ul(merged) < x + ul(x) + ul(k) + ul(y) + y) {
        pe = e;
        continue;
      }
    }
    d = emitPair(b, dst, d, dlen, pz, ps, pe);
    if (d < 0) return -1;
    pz = k;
    ps = j;
    pe = e;
  }
  return emitPair(b, dst, d, dlen, pz, ps, pe);
}

export function encode(a: usize, b: usize, len: i32, dst: usize, dlen: i32, compact: i32): i32 {
  return compact ? encodeCompact(a, b, len, dst, dlen) : encodeCanonical(a, b, len, dst, dlen);
}

// Error codes: -(1 + rule + 16 * offset), rules numbered as DECODE_RULES in src/errors.ts.
// @ts-ignore: decorator
@inline function err(rule: i32, off: i32): i32 {
  return -(1 + rule + 16 * off);
}

// Pass 1: all of QEMU's xbzrle_decode_buffer rules, in its order, without writing.
function validate(s: usize, slen: i32, dlen: i32): i32 {
  let i: i32 = 0;
  let d: i32 = 0;
  while (i < slen) {
    if (slen - i < 2) return err(0, i);
    let z = <i32>load<u8>(s + <usize>i);
    let zl: i32 = 1;
    if (z & 0x80) {
      const b1 = <i32>load<u8>(s + <usize>i + 1);
      if (b1 & 0x80) return err(1, i);
      z = (z & 0x7f) | (b1 << 7);
      zl = 2;
    }
    if (i != 0 && z == 0) return err(2, i);
    d += z;
    if (d > dlen) return err(3, i);
    i += zl;
    if (slen - i < 2) return err(4, i);
    let n = <i32>load<u8>(s + <usize>i);
    let nl: i32 = 1;
    if (n & 0x80) {
      const b1 = <i32>load<u8>(s + <usize>i + 1);
      if (b1 & 0x80) return err(5, i);
      n = (n & 0x7f) | (b1 << 7);
      nl = 2;
    }
    if (n == 0) return err(6, i);
    if (d + n > dlen) return err(7, i);
    if (i + nl + n > slen) return err(8, i);
    i += nl + n;
    d += n;
  }
  return d;
}

// Validate first, then apply: an invalid delta leaves the page untouched.
export function decode(s: usize, slen: i32, dst: usize, dlen: i32): i32 {
  const r = validate(s, slen, dlen);
  if (r < 0) return r;
  let i: i32 = 0;
  let d: i32 = 0;
  while (i < slen) {
    let b = <i32>load<u8>(s + <usize>i);
    i++;
    if (b & 0x80) {
      b = (b & 0x7f) | (<i32>load<u8>(s + <usize>i) << 7);
      i++;
    }
    d += b;
    let n = <i32>load<u8>(s + <usize>i);
    i++;
    if (n & 0x80) {
      n = (n & 0x7f) | (<i32>load<u8>(s + <usize>i) << 7);
      i++;
    }
    memory.copy(dst + <usize>d, s + <usize>i, <usize>n);
    i += n;
    d += n;
  }
  return r;
}
