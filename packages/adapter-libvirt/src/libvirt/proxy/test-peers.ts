// Test-only socket peers standing in for QEMU around the proxy pair (not built: src/**/test-*.ts).
import { connect, createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'

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

/** Two connected unix sockets with half-close (`[ours, theirs]`), through a one-shot server in `dir`. */
export async function socketPair(dir: string, name: string): Promise<[Socket, Socket]> {
  const path = join(dir, name)
  const server = createServer({ allowHalfOpen: true })
  await new Promise<void>((r) => server.listen(path, r))
  const accepted = new Promise<Socket>((r) => server.once('connection', r))
  const ours = connect({ path, allowHalfOpen: true })
  const theirs = await accepted
  server.close()
  return [ours, theirs]
}
