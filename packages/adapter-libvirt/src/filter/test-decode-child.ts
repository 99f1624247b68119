// Test-only child process: decodes the xbzrle file argv[2] through DecodeStream into a slow consumer that
// hashes on the fly, then prints { sha256, bytes, vmHwmKiB, maxRssKiB } as one JSON line.
import { createHash } from 'node:crypto'
import { createReadStream, readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DecodeStream } from './streams.js'

const hash = createHash('sha256')
let bytes = 0
let writes = 0
await pipeline(
  createReadStream(process.argv[2]!, { highWaterMark: 1 << 20 }),
  new DecodeStream(),
  new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _e, cb) {
      hash.update(chunk)
      bytes += chunk.length
      // A slow reader: yields to the event loop after every write, and sleeps now and then.
      if (++writes % 64 === 0) setTimeout(cb, 1)
      else setImmediate(cb)
    },
  }),
)
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
process.stdout.write(
  `${JSON.stringify({
    sha256: hash.digest('hex'),
    bytes,
    vmHwmKiB: hwm ? Number(hwm[1]) : undefined,
    maxRssKiB: process.resourceUsage().maxRSS,
  })}\n`,
)
