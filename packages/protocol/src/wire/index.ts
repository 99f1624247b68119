export { ByteWriter, readU32le } from './byte-writer.js'
export { ChunkQueue } from './chunk-queue.js'
export { crc32, crc32Byte, hex32 } from './crc32.js'
export { Cursor } from './cursor.js'
export { MAGIC, MAGIC_LENGTH, matchesMagicPrefix } from './magic.js'
export {
  isVarintValue,
  MAX_VARINT_BYTES,
  readVarint,
  type VarintResult,
  varintLength,
  writeVarint,
} from './varint.js'
