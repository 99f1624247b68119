/**
 * A hand-driven WebSocket peer for receiver tests: says hello, then does only what the test tells it to, so a test
 * can keep a connection open, go silent, or replace it with another one.
 */
import WebSocket from 'ws'

export interface RawPeer {
  readonly ws: WebSocket
  /** The welcome (rejects if the connection closes first). */
  readonly welcome: Promise<Record<string, unknown>>
  /** Close code and the refuse message, if any, once the connection is closed. */
  readonly closed: Promise<{ code: number; refuse?: { code: string; message: string } }>
  /** Text messages after the welcome, in order. */
  readonly texts: Array<Record<string, unknown>>
  /** Binary messages, in order. */
  readonly binaries: Buffer[]
}

export function rawPeer(port: number, hello: Record<string, unknown>, token: string): RawPeer {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { authorization: `Bearer ${token}` } })
  const texts: Array<Record<string, unknown>> = []
  const binaries: Buffer[] = []
  let refuse: { code: string; message: string } | undefined
  let gotWelcome: (w: Record<string, unknown>) => void = () => {}
  let noWelcome: (e: Error) => void = () => {}
  const welcome = new Promise<Record<string, unknown>>((resolve, reject) => {
    gotWelcome = resolve
    noWelcome = reject
  })
  welcome.catch(() => {})
  ws.on('open', () =>
    ws.send(JSON.stringify({ type: 'hello', protocol: 'xbzrle', versions: [1, 2], ...hello })),
  )
  ws.on('message', (d: Buffer, bin) => {
    if (bin) return void binaries.push(d)
    const m = JSON.parse(d.toString())
    if (m.type === 'welcome') gotWelcome(m)
    else {
      if (m.type === 'refuse') refuse = m
      texts.push(m)
    }
  })
  ws.on('error', () => {})
  const closed = new Promise<{ code: number; refuse?: { code: string; message: string } }>((resolve) =>
    ws.on('close', (code) => {
      noWelcome(new Error(`closed with ${code} ${refuse?.message ?? ''} before a welcome`))
      resolve({ code, ...(refuse ? { refuse } : {}) })
    }),
  )
  return { ws, welcome, closed, texts, binaries }
}
