// Test-only socket peers standing in for QEMU around the proxy pair (not built: src/**/test-*.ts).
import { connect, createServer, type Server } from 'node:net'

/**
 * A fake destination QEMU listening on `path`: answers PONG at the first byte (the return path flows before the
 * stream ends), SHUT after EOF, and collects what it got in `received`.
 */
export async function fakeDestinationQemu(path: string): Promise<{ server: Server; received: Buffer[] }> {
  const received: Buffer[] = []
  const server = createServer({ allowHalfOpen: true }, (s) => {
    let first = true
    s.on('data', (b: Buffer) => {
      received.push(b)
      if (first) s.write('PONG')
      first = false
    })
    s.on('end', () => s.end('SHUT'))
    s.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(path, r))
  return { server, received }
}

/** Connects to the unix socket at `path` and closes again; rejects when nobody accepts there. */
export async function probeUnixSocket(path: string): Promise<void> {
  const c = connect({ path })
  await new Promise<void>((r, j) => {
    c.once('connect', () => r())
    c.once('error', j)
  })
  c.destroy()
}
