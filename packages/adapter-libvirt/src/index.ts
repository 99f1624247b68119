export { BaseGate } from './base/base-gate.js'
export {
  type BaseOptions,
  baseBytes,
  DEFAULT_MAX_AUTO_BASE_CACHE,
  type DecoderBase,
  type EncoderBase,
  type EncoderBaseOptions,
  prepareDecoderBase,
  prepareEncoderBase,
} from './base/base-image.js'
export { BaseSeeder, type SeedResult, type SeedTarget } from './base/seeder.js'
export { ACCEPTED_CRITICAL, type PeekedHeader, peekStreamHeader, replay } from './base/stream-header.js'
export {
  DEFAULT_MAX_DECODER_CACHE,
  type DecoderOptions,
  type DecoderStats,
  XbzrleDecoder,
} from './filter/decoder.js'
export {
  DEFAULT_MAX_AUTO_CACHE,
  type EncoderOptions,
  type EncoderStats,
  XbzrleEncoder,
} from './filter/encoder.js'
export { type PassCounters, zeroCounters } from './filter/pass-stats.js'
export type { EncodeStreamOptions } from './filter/streams.js'
export { DecodeStream, EncodeStream, IDLE_FLUSH_MS, IO_CHUNK } from './filter/streams.js'
export { RelayState } from './libvirt/proxy/relay.js'
export { ReturnPathWatcher } from './libvirt/proxy/return-path.js'
export {
  formatSession,
  type ProxyCounters,
  type ProxyRefusal,
  type ProxyRole,
  type ProxySessionResult,
} from './libvirt/proxy/sessions.js'
export {
  listenTcp,
  type TcpEndpoint,
  type TlsClientOptions,
  type TlsServerOptions,
  type TransportConnector,
  type TransportListener,
  tcpConnector,
} from './libvirt/proxy/transport.js'
export {
  type DestinationProxyOptions,
  type MigrationProxy,
  type ProxyCommonOptions,
  type ProxyOptions,
  type ProxySessionObserver,
  type SourceProxyOptions,
  startDestinationProxy,
  startProxy,
  startSourceProxy,
} from './libvirt/proxy.js'
export {
  agreeOnBase,
  clientHandshake,
  HandshakeRefused,
  HandshakeStatus,
  isLoopbackHost,
  loadProxyToken,
  type PeerBase,
  PROXY_HANDSHAKE_MAGIC,
  PROXY_HANDSHAKE_VERSION,
  type ProxyBaseOffer,
  serverHandshake,
  TOKEN_ENV,
} from './libvirt/proxy-auth.js'
export {
  buildSaveImageHeader,
  buildSaveImagePrefix,
  parseSaveImageHeader,
  readSaveImageInfo,
  readSaveImageXml,
  SAVE_FORMATS,
  SAVE_HEADER_SIZE,
  SAVE_MAGIC,
  SAVE_PARTIAL_MAGIC,
  SaveImageError,
  type SaveImageHeader,
  type SaveImageHeaderFields,
  type SaveImageInfo,
  saveImageXml,
  sniffSaveImage,
} from './libvirt/save-image.js'
export { DEFAULT_TARGET_PAGE_SIZE, type PageKind } from './qemu/format.js'
export {
  type PageRecord,
  type PassthroughReason,
  type QemuStreamHandler,
  QemuStreamReader,
  type QemuStreamStats,
  type RamBlock,
} from './qemu/stream-reader.js'
export {
  SimulatedGuest,
  type SimulatedGuestOptions,
  WORKLOADS,
  type Workload,
} from './simulate/simulated-guest.js'
