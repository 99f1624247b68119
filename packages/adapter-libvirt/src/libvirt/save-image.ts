/**
 * libvirt's save image header (`virQEMUSaveHeader`, libvirt 9.0 src/qemu/qemu_saveimage.h): 92 bytes, then
 * `dataLen` bytes of XML + cookie + padding, then the QEMU migration stream. Integers are in the host's byte
 * order; readers swap when the version looks byte-swapped, as libvirt does.
 */
export const SAVE_MAGIC = 'LibvirtQemudSave'
export const SAVE_PARTIAL_MAGIC = 'LibvirtQemudPart'
export const SAVE_HEADER_SIZE = 92
export const SAVE_VERSION = 2
/** The `compressed` (11.x: `format`) enum. */
export const SAVE_FORMATS = ['raw', 'gzip', 'bzip2', 'xz', 'lzop', 'zstd', 'sparse'] as const

export interface SaveImageHeader {
  version: number
  /** XML + cookie + padding that follow the 92-byte header. */
  dataLen: number
  wasRunning: boolean
  format: number
  formatName: string
  cookieOffset: number
  littleEndian: boolean
}

export class SaveImageError extends Error {
  override readonly name = 'SaveImageError'
}

function ascii(b: Uint8Array, from: number, to: number): string {
  return String.fromCharCode(...b.subarray(from, to))
}

/** What the first 16 bytes say: a complete save image, one still being written, or something else. */
export function sniffSaveImage(first: Uint8Array): 'complete' | 'partial' | undefined {
  if (first.length < 16) return undefined
  const magic = ascii(first, 0, 16)
  if (magic === SAVE_MAGIC) return 'complete'
  if (magic === SAVE_PARTIAL_MAGIC) return 'partial'
  return undefined
}

/**
 * Parses and checks the 92-byte header. Throws SaveImageError, with the reason libvirt itself would give, for
 * images we must not touch: partial, unknown version, or already compressed by libvirt.
 */
export function parseSaveImageHeader(b: Uint8Array): SaveImageHeader {
  if (b.length < SAVE_HEADER_SIZE) throw new SaveImageError('libvirt save image: header is truncated')
  const kind = sniffSaveImage(b)
  if (kind === 'partial') {
    throw new SaveImageError(
      'libvirt save image is incomplete (magic LibvirtQemudPart): the save is still running or failed',
    )
  }
  if (kind !== 'complete') throw new SaveImageError('not a libvirt save image (no LibvirtQemudSave magic)')
  const dv = new DataView(b.buffer, b.byteOffset, SAVE_HEADER_SIZE)
  let le = true
  if (dv.getUint32(16, true) > SAVE_VERSION) le = false
  const u32 = (off: number) => dv.getUint32(off, le)
  const version = u32(16)
  if (version !== SAVE_VERSION) {
    throw new SaveImageError(
      `libvirt save image version ${dv.getUint32(16, true)} is not supported (expected 2)`,
    )
  }
  const dataLen = u32(20)
  const format = u32(28)
  if (dataLen === 0 || dataLen > 256 << 20) {
    throw new SaveImageError(`libvirt save image: implausible XML area length ${dataLen}`)
  }
  const formatName = SAVE_FORMATS[format] ?? `unknown format ${format}`
  if (format !== 0) {
    throw new SaveImageError(
      `libvirt save image is already compressed (${formatName}); save it with save_image_format = "raw" in qemu.conf`,
    )
  }
  return {
    version,
    dataLen,
    wasRunning: u32(24) !== 0,
    format,
    formatName,
    cookieOffset: u32(32),
    littleEndian: le,
  }
}

/** The domain XML from the data area (NUL-terminated), for `inspect`. */
export function saveImageXml(dataArea: Uint8Array): string {
  const nul = dataArea.indexOf(0)
  return new TextDecoder().decode(dataArea.subarray(0, nul < 0 ? dataArea.length : nul))
}
