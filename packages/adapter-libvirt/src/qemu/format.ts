// Constants of QEMU's migration stream (main channel). Values are the same in QEMU 7.2 and 10.2;
// see shared reference "qemu-migration-stream.md" §1–3 for where each comes from.

export const QEMU_VM_FILE_MAGIC = 0x5145564d // "QEVM"
export const QEMU_VM_FILE_VERSION = 3

export enum Section {
  Eof = 0x00,
  Start = 0x01,
  Part = 0x02,
  End = 0x03,
  Full = 0x04,
  Subsection = 0x05,
  VmDescription = 0x06,
  Configuration = 0x07,
  Command = 0x08,
  Footer = 0x7e,
}

export enum Command {
  OpenReturnPath = 1,
  Ping = 2,
  PostcopyAdvise = 3,
  PostcopyListen = 4,
  PostcopyRun = 5,
  PostcopyRamDiscard = 6,
  Packaged = 7,
}

/** RAM record flags: the low bits of each record's be64 (offset | flags). */
export enum RamFlag {
  Full = 0x01,
  Zero = 0x02,
  MemSize = 0x04,
  Page = 0x08,
  Eos = 0x10,
  Continue = 0x20,
  Xbzrle = 0x40,
  Hook = 0x80,
  CompressPage = 0x100,
  MultifdFlush = 0x200,
}

/** x86's TARGET_PAGE_SIZE. It is not written in the stream, so it is a parameter with this default. */
export const DEFAULT_TARGET_PAGE_SIZE = 4096

/** ENCODING_FLAG_XBZRLE: the byte after an XBZRLE record header. */
export const XBZRLE_ENCODING_FLAG = 0x01

export type PageKind = 'page' | 'zero' | 'xbzrle' | 'compress'
