import { MAGIC, MAGIC_LENGTH } from './wire/magic.js'

const ascii = (b: Uint8Array, from: number, to: number): string =>
  String.fromCharCode(...b.subarray(from, to))

/** True iff `firstBytes` starts with the xbzrle magic (needs at least 8 bytes). */
export function isXbzrleStream(firstBytes: Uint8Array): boolean {
  if (firstBytes.length < MAGIC_LENGTH) return false
  for (let i = 0; i < MAGIC_LENGTH; i++) if (firstBytes[i] !== MAGIC[i]) return false
  return true
}

/**
 * A one-line human hint for input that is not an xbzrle stream, from its first bytes (16 or more is best), e.g.
 * "not an xbzrle stream (starts with QEVM: a raw QEMU migration stream; did you mean `xbzrle encode`?)".
 */
export function describeNotXbzrle(firstBytes: Uint8Array): string {
  const b = firstBytes
  const what = (s: string) => `not an xbzrle stream (${s})`
  if (isXbzrleStream(b)) return 'this is an xbzrle stream'
  if (b.length === 0) return what('empty input')
  if (b.length >= 4 && ascii(b, 0, 4) === 'QEVM')
    return what('starts with QEVM: a raw QEMU migration stream; did you mean `xbzrle encode`?')
  if (b.length >= 16 && /^LibvirtQemud(Save|Part)$/.test(ascii(b, 0, 16)))
    return what(`starts with ${ascii(b, 0, 16)}: a libvirt save image; did you mean \`xbzrle encode\`?`)
  if (b.length >= 4 && b[0] === 0x89 && ascii(b, 1, 4) === 'XBZ')
    return what(
      'the xbzrle magic is damaged: the file was probably transferred in text mode (line endings changed)',
    )
  if (b[0] === 0x09 && b.length >= 4 && ascii(b, 1, 4) === 'XBZ')
    return what('the xbzrle magic lost its high bit: the file went through a 7-bit text channel')
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b)
    return what('gzip-compressed data; decompress it first')
  if (b.length >= 4 && b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd)
    return what('zstd-compressed data; decompress it first')
  if (b.length >= 6 && b[0] === 0xfd && ascii(b, 1, 6) === '7zXZ\0')
    return what('xz-compressed data; decompress it first')
  if (b.length >= 3 && ascii(b, 0, 3) === 'BZh') return what('bzip2-compressed data; decompress it first')
  if (b.length >= 4 && b[0] === 0x04 && b[1] === 0x22 && b[2] === 0x4d && b[3] === 0x18)
    return what('lz4-compressed data; decompress it first')
  const shown = Array.from(b.subarray(0, 8), (x) => x.toString(16).padStart(2, '0')).join(' ')
  return what(`starts with ${shown}; expected 89 58 42 5a 0d 0a 1a 0a`)
}
