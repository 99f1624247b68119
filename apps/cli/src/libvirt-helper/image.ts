/**
 * libvirt save images whose header names a compressor (lzop, zstd) but whose payload may be ours: the helper
 * writes an xbzrle stream where libvirt believes lzop output goes. This reads the 92-byte header tolerantly
 * (parseSaveImageHeader refuses every compressed image), sniffs the payload, explains it, and converts such an
 * image into a raw one (`virsh restore` reads it without any helper).
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { chmod, chown, open, rename, rm, stat } from 'node:fs/promises'
import type { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  DecodeStream,
  IO_CHUNK,
  SAVE_FORMATS,
  SAVE_HEADER_SIZE,
  SAVE_MAGIC,
  SAVE_PARTIAL_MAGIC,
} from '@xbzrle/adapter-libvirt'
import { isXbzrleStream } from '@xbzrle/protocol'
import { CliError, ExitCode } from '../errors.js'

export type PayloadKind = 'xbzrle' | 'qemu' | 'lzop' | 'zstd' | 'gzip' | 'bzip2' | 'xz' | 'empty' | 'unknown'

export interface LibvirtImageInfo {
  partial: boolean
  version: number
  dataLen: number
  format: number
  formatName: string
  littleEndian: boolean
  streamOffset: number
  payload: PayloadKind
  /** The raw 92-byte header. */
  header: Uint8Array
}

/** What a stream starts with. */
export function payloadKind(b: Uint8Array): PayloadKind {
  if (b.length === 0) return 'empty'
  if (isXbzrleStream(b)) return 'xbzrle'
  const s = Buffer.from(b.subarray(0, 9)).toString('latin1')
  if (s.startsWith('QEVM')) return 'qemu'
  if (s === '\x89LZO\0\r\n\x1a\n') return 'lzop'
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return 'zstd'
  if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip'
  if (s.startsWith('BZh')) return 'bzip2'
  if (s.startsWith('\xfd7zXZ\0')) return 'xz'
  return 'unknown'
}

/** Reads the header of a libvirt save image (any format) and sniffs its payload; undefined if not such an image. */
export async function readLibvirtImage(path: string): Promise<LibvirtImageInfo | undefined> {
  const fh = await open(path, 'r')
  try {
    const header = new Uint8Array(SAVE_HEADER_SIZE)
    const { bytesRead } = await fh.read(header, 0, SAVE_HEADER_SIZE, 0)
    if (bytesRead < SAVE_HEADER_SIZE) return undefined
    const magic = Buffer.from(header.subarray(0, 16)).toString('latin1')
    if (magic !== SAVE_MAGIC && magic !== SAVE_PARTIAL_MAGIC) return undefined
    const dv = new DataView(header.buffer, header.byteOffset, SAVE_HEADER_SIZE)
    const le = dv.getUint32(16, true) <= 0xffff
    const version = dv.getUint32(16, le)
    const dataLen = dv.getUint32(20, le)
    const format = dv.getUint32(28, le)
    const streamOffset = SAVE_HEADER_SIZE + dataLen
    const head = new Uint8Array(16)
    const r = await fh.read(head, 0, 16, streamOffset)
    return {
      partial: magic === SAVE_PARTIAL_MAGIC,
      version,
      dataLen,
      format,
      formatName: SAVE_FORMATS[format] ?? `format ${format}`,
      littleEndian: le,
      streamOffset,
      payload: payloadKind(head.subarray(0, r.bytesRead)),
      header,
    }
  } finally {
    await fh.close()
  }
}

/** True for an image written through the helper: the header names a compressor, the payload is xbzrle. */
export function isHelperImage(i: LibvirtImageInfo): boolean {
  return !i.partial && i.format !== 0 && i.payload === 'xbzrle'
}

/** The one line that tells a user what the image is and how to restore it. */
export function describeLibvirtImage(i: LibvirtImageInfo, path: string): string {
  if (i.partial) return `${path}: incomplete libvirt save image (magic LibvirtQemudPart)`
  if (isHelperImage(i)) {
    return (
      `${path}: libvirt save image whose header says ${i.formatName} but whose payload is an xbzrle stream ` +
      `(written by the xbzrle libvirt helper; the real ${i.formatName} cannot read it). Restore it with the ` +
      `helper installed (xbzrle libvirt install), or convert it: xbzrle libvirt convert ${path} -o ${path}.raw && virsh restore ${path}.raw`
    )
  }
  if (i.format === 0) return `${path}: raw libvirt save image (payload ${i.payload})`
  return `${path}: libvirt save image compressed with ${i.formatName} (payload ${i.payload})`
}

/**
 * Writes the raw libvirt save image a helper image stands for into `out` (ended at the end): the same header with
 * the format set to raw (0), the XML area verbatim, then the decoded QEMU stream. For `xbzrle decode IMAGE`.
 */
export async function writeRawImage(path: string, info: LibvirtImageInfo, out: Writable): Promise<void> {
  const header = Uint8Array.from(info.header)
  new DataView(header.buffer).setUint32(28, 0, info.littleEndian)
  out.write(header)
  await pipeline(createReadStream(path, { start: SAVE_HEADER_SIZE, end: info.streamOffset - 1 }), out, {
    end: false,
  })
  await pipeline(
    createReadStream(path, { start: info.streamOffset, highWaterMark: IO_CHUNK }),
    new DecodeStream({}),
    out,
  )
}

/** `xbzrle decode` of a helper image: writes the raw image and returns true; false (nothing written) otherwise. */
export async function decodeHelperImage(path: string, out: Writable): Promise<boolean> {
  const info = await readLibvirtImage(path).catch(() => undefined)
  if (!info || !isHelperImage(info)) return false
  await writeRawImage(path, info, out)
  return true
}

/**
 * Writes a raw libvirt save image from a helper image (see writeRawImage). `out` may equal `path` (written to a
 * temp file, then renamed, with the original's mode and owner).
 */
export async function convertHelperImage(path: string, out: string): Promise<{ bytesOut: number }> {
  const info = await readLibvirtImage(path)
  if (!info) throw new CliError(`${path}: not a libvirt save image`, ExitCode.BAD_INPUT)
  if (!isHelperImage(info)) {
    throw new CliError(
      `${path}: not an image written by the xbzrle helper (${describeLibvirtImage(info, path)})`,
      ExitCode.BAD_INPUT,
    )
  }
  const inPlace = out === path
  const target = inPlace ? `${path}.xbzrle-convert.tmp` : out
  const ws = createWriteStream(target, { highWaterMark: IO_CHUNK })
  try {
    await writeRawImage(path, info, ws)
    if (inPlace) {
      const st = await stat(path)
      await chmod(target, st.mode & 0o7777)
      await chown(target, st.uid, st.gid).catch(() => undefined)
      await rename(target, path)
    }
  } catch (e) {
    ws.destroy()
    await rm(target, { force: true })
    throw e
  }
  return { bytesOut: (await stat(out)).size }
}
