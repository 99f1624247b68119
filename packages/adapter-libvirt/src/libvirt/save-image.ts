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

export interface SaveImageHeaderFields {
  /** Default 'complete' (LibvirtQemudSave); 'partial' writes LibvirtQemudPart. */
  magic?: 'complete' | 'partial'
  /** Default 2. */
  version?: number
  dataLen: number
  wasRunning?: boolean
  /** Format enum (SAVE_FORMATS index). Default 0 (raw). */
  format?: number
  cookieOffset?: number
  /** Byte order of the integers. Default little-endian (x86_64 hosts). */
  littleEndian?: boolean
}

/** Builds a 92-byte header (for tests and for tools that regenerate raw images). */
export function buildSaveImageHeader(f: SaveImageHeaderFields): Uint8Array {
  const b = new Uint8Array(SAVE_HEADER_SIZE)
  const magic = f.magic === 'partial' ? SAVE_PARTIAL_MAGIC : SAVE_MAGIC
  for (let i = 0; i < 16; i++) b[i] = magic.charCodeAt(i)
  const dv = new DataView(b.buffer)
  const le = f.littleEndian ?? true
  dv.setUint32(16, f.version ?? SAVE_VERSION, le)
  dv.setUint32(20, f.dataLen, le)
  dv.setUint32(24, f.wasRunning ? 1 : 0, le)
  dv.setUint32(28, f.format ?? 0, le)
  dv.setUint32(32, f.cookieOffset ?? 0, le)
  return b
}

/** Builds a complete raw save image prefix: header + XML (NUL) + optional cookie (NUL) + zero padding. */
export function buildSaveImagePrefix(
  xml: string,
  options: { cookie?: string; padding?: number; wasRunning?: boolean; format?: number } = {},
): Uint8Array {
  const enc = new TextEncoder()
  const x = enc.encode(xml)
  const c = options.cookie !== undefined ? enc.encode(options.cookie) : undefined
  const used = x.length + 1 + (c ? c.length + 1 : 0)
  const dataLen = used + (options.padding ?? 64 * 1024)
  const out = new Uint8Array(SAVE_HEADER_SIZE + dataLen)
  out.set(
    buildSaveImageHeader({
      dataLen,
      wasRunning: options.wasRunning ?? true,
      format: options.format ?? 0,
      cookieOffset: c ? x.length + 1 : 0,
    }),
  )
  out.set(x, SAVE_HEADER_SIZE)
  if (c) out.set(c, SAVE_HEADER_SIZE + x.length + 1)
  return out
}

export interface SaveImageInfo {
  header: SaveImageHeader
  xml: string
  /** The save cookie (`<cookie>…</cookie>`), when there is one. */
  cookie?: string
  /** File offset where the QEMU stream starts (92 + dataLen). */
  streamOffset: number
}

/**
 * Reads the header, domain XML and cookie of a raw libvirt save image file (an xbzrle-encoded image carries
 * them verbatim inside its first batch, not at offset 0: use `xbzrle inspect` for those).
 * Throws SaveImageError like parseSaveImageHeader.
 */
export async function readSaveImageInfo(path: string): Promise<SaveImageInfo> {
  const { open } = await import('node:fs/promises')
  const fh = await open(path, 'r')
  try {
    const head = new Uint8Array(SAVE_HEADER_SIZE)
    const { bytesRead } = await fh.read(head, 0, SAVE_HEADER_SIZE, 0)
    const header = parseSaveImageHeader(head.subarray(0, bytesRead))
    const data = new Uint8Array(header.dataLen)
    const r = await fh.read(data, 0, header.dataLen, SAVE_HEADER_SIZE)
    if (r.bytesRead < header.dataLen) throw new SaveImageError('libvirt save image: XML area is truncated')
    const info: SaveImageInfo = {
      header,
      xml: saveImageXml(data),
      streamOffset: SAVE_HEADER_SIZE + header.dataLen,
    }
    if (header.cookieOffset > 0 && header.cookieOffset < data.length) {
      info.cookie = saveImageXml(data.subarray(header.cookieOffset))
    }
    return info
  } finally {
    await fh.close()
  }
}

/** The domain XML of a raw save image file. */
export async function readSaveImageXml(path: string): Promise<string> {
  return (await readSaveImageInfo(path)).xml
}
