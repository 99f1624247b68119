// Test helper: writes a simulated guest's QEMU migration stream to stdout with backpressure and prints
// "gen BYTES SHA256" on stderr. Usage: node test-simulate.mjs MEM_MIB PASSES
import { createHash } from 'node:crypto'
import { SimulatedGuest } from '@xbzrle/adapter-libvirt'

const [mem, passes] = process.argv.slice(2).map(Number)
const h = createHash('sha256')
let n = 0
for (const c of new SimulatedGuest({ memMiB: mem, passes }).stream()) {
  h.update(c)
  n += c.length
  if (!process.stdout.write(c)) await new Promise((r) => process.stdout.once('drain', r))
}
process.stderr.write(`gen ${n} ${h.digest('hex')}\n`)
