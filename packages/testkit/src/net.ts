import { createServer } from 'node:net'

/**
 * A TCP port that was free on `host` a moment ago (listen on port 0, read the port, close). Another process
 * may take it before you do; prefer listening on port 0 yourself when the code under test allows it.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}
