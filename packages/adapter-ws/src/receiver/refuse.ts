/** Sends a refusal: the full message as a JSON `refuse`, then a close with the code (its reason is ≤ 123 bytes). */
import WebSocket from 'ws'
import { CloseCode, type CloseCodeName } from '../codes.js'
import type { WsRefuse } from '../messages.js'
import { truncateUtf8 } from '../util.js'

/** How long a refused peer gets to answer our close frame before the socket is cut. */
const CLOSE_HANDSHAKE_MS = 2000

export function sendRefusal(ws: WebSocket, name: CloseCodeName, message: string): void {
  if (ws.isPaused) ws.resume() // to read the peer's close frame
  if (ws.readyState !== WebSocket.OPEN) {
    ws.terminate()
    return
  }
  const refuse: WsRefuse = { type: 'refuse', code: name, message: truncateUtf8(message, 1000) }
  ws.send(JSON.stringify(refuse))
  ws.close(CloseCode[name], truncateUtf8(message, 120))
  setTimeout(() => ws.terminate(), CLOSE_HANDSHAKE_MS).unref()
}
