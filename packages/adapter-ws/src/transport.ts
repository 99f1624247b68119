/** A WebSocket as the ReliableChannel's transport (the channel itself knows nothing about ws). */
import type WebSocket from 'ws'
import type { ChannelTransport } from './channel.js'

export function wsTransport(ws: WebSocket): ChannelTransport {
  return {
    sendBinary: (buf, cb) => ws.send(buf, { binary: true }, cb),
    sendText: (text) => ws.send(text),
    get bufferedAmount() {
      return ws.bufferedAmount
    },
  }
}
