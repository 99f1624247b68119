/**
 * `@xbzrle/adapter-ws`: carries an xbzrle stream between hosts over WebSocket (ws:// or wss://) with token auth,
 * end-to-end backpressure, rate limiting, reconnect + resume, and a reliable return path. Knows nothing about QEMU:
 * the receiver's pipeline (e.g. a decoder writing to QEMU) is injected per migration.
 */
export {
  ChannelError,
  type ChannelTransport,
  ReliableChannel,
  type ReliableChannelOptions,
} from './channel.js'
export { CloseCode, type CloseCodeName, closeCodeName, FATAL_CLOSE_CODES, SessionRefusal } from './codes.js'
export { decodeMessage, encodeMessage, HEADER_BYTES, KIND_DATA, KIND_END } from './frame.js'
export {
  type BaseOffer,
  BaseOfferSchema,
  parseControl,
  type WsAck,
  WsAckSchema,
  type WsControl,
  type WsHello,
  WsHelloSchema,
  type WsWelcome,
  WsWelcomeSchema,
} from './messages.js'
export { TokenBucket } from './rate.js'
export type {
  Pipeline,
  PipelineFactory,
  Receiver,
  ReceiverEvent,
  ReceiverOptions,
  SessionInfo,
  SessionSnapshot,
} from './receiver/types.js'
export { createReceiver } from './receiver.js'
export {
  type ReconnectPolicy,
  SendError,
  type Sender,
  type SenderEvent,
  type SenderOptions,
  type SendResult,
} from './sender/types.js'
export { createSender, sendStream } from './sender.js'
export { bearerToken, type LoadTokenOptions, loadToken, tokensEqual } from './token.js'
export { isLoopbackHost, isSafeMigrationId } from './util.js'
