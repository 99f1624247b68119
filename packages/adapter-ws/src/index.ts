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
export {
  createReceiver,
  type Pipeline,
  type PipelineFactory,
  type Receiver,
  type ReceiverEvent,
  type ReceiverOptions,
  type SessionInfo,
  type SessionSnapshot,
} from './receiver.js'
export {
  createSender,
  type ReconnectPolicy,
  SendError,
  type Sender,
  type SenderEvent,
  type SenderOptions,
  type SendResult,
  sendStream,
} from './sender.js'
export { bearerToken, type LoadTokenOptions, loadToken, tokensEqual } from './token.js'
export { isLoopbackHost, isSafeMigrationId } from './util.js'
