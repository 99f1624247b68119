/**
 * Loopback throughput: adapter-ws over ws:// (masked and zero mask), wss://, and raw TCP (node:net), 512 MiB in
 * 1 MiB messages, all in one process and one run. Writes BENCHMARKS.md next to package.json.
 * Run: npm run bench -w @xbzrle/adapter-ws
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { cpus, loadavg, release, totalmem } from 'node:os'
import { Readable, Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { makeCert } from '@xbzrle/testkit'
import { createReceiver, sendStream } from '../src/index.js'

const MiB = 1024 * 1024
const TOTAL = Number(process.env.BENCH_MIB ?? 512) * MiB
const MSG = MiB
const block = Buffer.alloc(MSG, 0x5a)
for (let i = 0; i < MSG; i += 4096) block.writeUInt32LE(Math.imul(i, 2654435761) >>> 0, i)

const source = () => {
  let sent = 0
  return new Readable({
    highWaterMark: MSG,
    read() {
      if (sent >= TOTAL) return void this.push(null)
      sent += MSG
      this.push(block)
    },
  })
}
const counter = () => {
  let n = 0
  return {
    bytes: () => n,
    writable: new Writable({
      highWaterMark: 4 * MiB,
      write(c: Buffer, _e, cb) {
        n += c.length
        cb()
      },
    }),
  }
}

async function viaAdapter(tls: boolean, zeroMask: boolean): Promise<number> {
  const cert = tls ? makeCert() : undefined
  const sink = counter()
  const rx = createReceiver({
    token: 'bench',
    ...(cert ? { tls: cert } : {}),
    createPipeline: () => sink.writable,
  })
  const { port } = await rx.listen('127.0.0.1', 0)
  const t0 = performance.now()
  await sendStream(source(), `${tls ? 'wss://localhost' : 'ws://127.0.0.1'}:${port}/`, {
    token: 'bench',
    zeroMask,
    ...(cert ? { ca: cert.cert } : {}),
  })
  const s = (performance.now() - t0) / 1000
  await rx.close()
  if (sink.bytes() !== TOTAL) throw new Error(`got ${sink.bytes()} bytes`)
  return TOTAL / s
}

async function rawTcp(): Promise<number> {
  let got = 0
  let t0 = 0
  const doneP = new Promise<number>((resolve) => {
    const server = createServer((sock) => {
      sock.on('data', (d: Buffer) => {
        got += d.length
      })
      sock.on('end', () => {
        const s = (performance.now() - t0) / 1000
        server.close()
        resolve(TOTAL / s)
      })
    })
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      const c = createConnection({ port, host: '127.0.0.1' }, () => {
        t0 = performance.now()
        source().pipe(c)
      })
    })
  })
  const rate = await doneP
  if (got !== TOTAL) throw new Error(`raw tcp got ${got}`)
  return rate
}

let bufferutil = 'no'
try {
  await import('bufferutil')
  bufferutil = 'yes'
} catch {}

const loadBefore = loadavg()[0]!.toFixed(1)
const rows: Array<[string, number]> = []
const fmt = (r: number) => `${(r / 1e6).toFixed(0)} MB/s`
for (const [name, fn] of [
  ['raw TCP (node:net)', () => rawTcp()],
  ['ws:// (masked)', () => viaAdapter(false, false)],
  ['ws:// (zero mask)', () => viaAdapter(false, true)],
  ['wss:// (TLS, masked)', () => viaAdapter(true, false)],
  ['wss:// (TLS, zero mask)', () => viaAdapter(true, true)],
] as const) {
  const r = await fn()
  rows.push([name, r])
  console.log(`${name.padEnd(26)} ${fmt(r)}`)
}

const wsVersion = JSON.parse(
  readFileSync(fileURLToPath(new URL('../../../node_modules/ws/package.json', import.meta.url)), 'utf8'),
).version
const md = `# adapter-ws benchmarks

Loopback (127.0.0.1), ${TOTAL / MiB} MiB in ${MSG / MiB} MiB messages, sender and receiver in one process, all
rows from the same run (\`npm run bench -w @xbzrle/adapter-ws\`). The ws rows go through the whole adapter
(\`sendStream\` → \`createReceiver\`: sequence numbers, acks, window, retransmit buffer, token auth,
perMessageDeflate off); the receiver's pipeline only counts bytes. Raw TCP is a plain \`node:net\` pipe of the same
buffers, for reference.

| transport | throughput |
|---|---|
${rows.map(([n, r]) => `| ${n} | ${fmt(r)} |`).join('\n')}

Machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM,
Linux ${release()}, Node ${process.version}, ws ${wsVersion}, bufferutil loaded: ${bufferutil}.
Date: ${new Date().toISOString().slice(0, 10)}. 1-minute load average at the start: ${loadBefore} (other jobs
share the machine; compare rows within one run rather than across machines).
`
writeFileSync(fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url)), md)
console.log('wrote BENCHMARKS.md')
