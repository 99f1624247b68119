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
export { DecodeStream, EncodeStream, IDLE_FLUSH_MS, IO_CHUNK } from './filter/streams.js'
export {
  type DestinationProxyOptions,
  formatSession,
  listenTcp,
  type MigrationProxy,
  type ProxyCommonOptions,
  type ProxyCounters,
  type ProxySessionResult,
  ReturnPathWatcher,
  type SourceProxyOptions,
  startDestinationProxy,
  startSourceProxy,
  type TcpEndpoint,
  type TlsClientOptions,
  type TlsServerOptions,
  type TransportConnector,
  type TransportListener,
  tcpConnector,
} from './libvirt/proxy.js'
export {
  clientHandshake,
  HandshakeRefused,
  HandshakeStatus,
  isLoopbackHost,
  loadProxyToken,
  PROXY_HANDSHAKE_MAGIC,
  PROXY_HANDSHAKE_VERSION,
  serverHandshake,
  TOKEN_ENV,
} from './libvirt/proxy-auth.js'
export {
  PROXY_USAGE,
  type ProxyArgs,
  ProxyUsageError,
  parseHostPort,
  parseProxyArgs,
  proxyMain,
  proxySecurityWarning,
  runProxy,
} from './libvirt/proxy-cli.js'
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
