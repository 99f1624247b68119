/**
 * Where the filter's CPU goes, measured in-process on the same files (no child process, no pipe, output
 * discarded): reading the file, parsing the QEMU stream only, the whole XbzrleEncoder (default format, and format
 * v1 = without the second-stage compressor), the whole XbzrleDecoder.
 * The difference between these and the CLI rows is process start-up and stdin/stdout I/O.
 */
import { createReadStream } from 'node:fs'
import { QemuStreamReader, XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt'
import { CLI, MiB, shq, timed } from './util.js'

export interface Breakdown {
  readS: number
  parseS: number
  encodeS: number
  /** XbzrleEncoder writing format v1 (XBZRLE frames only, no second-stage compressor). */
  encodeV1S: number
  decodeS: number
  /** CPU seconds of `xbzrle --version` (process start-up and module loading, paid by every CLI run). */
  startupS?: number
}

async function cpuOf(path: string, sink: (c: Uint8Array) => void, end: () => void): Promise<number> {
  const t0 = process.cpuUsage()
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) sink(chunk as Buffer)
  end()
  const t = process.cpuUsage(t0)
  return (t.user + t.system) / 1e6
}

export async function breakdown(stream: string, encoded: string): Promise<Breakdown> {
  const readS = await cpuOf(
    stream,
    () => {},
    () => {},
  )
  const reader = new QemuStreamReader({ verbatim() {}, page() {} })
  const parseS = await cpuOf(
    stream,
    (c) => reader.push(c),
    () => reader.finish(),
  )
  const enc = new XbzrleEncoder(() => {})
  const encodeS = await cpuOf(
    stream,
    (c) => enc.push(c),
    () => enc.finish(),
  )
  const enc1 = new XbzrleEncoder(() => {}, { formatVersion: 1 })
  const encodeV1S = await cpuOf(
    stream,
    (c) => enc1.push(c),
    () => enc1.finish(),
  )
  const dec = new XbzrleDecoder(() => {})
  const decodeS = await cpuOf(
    encoded,
    (c) => dec.push(c),
    () => dec.finish(),
  )
  let startupS = Number.POSITIVE_INFINITY
  for (let i = 0; i < 3; i++) startupS = Math.min(startupS, (await timed(`node ${shq(CLI)} --version`)).cpuS)
  return { readS, parseS, encodeS, encodeV1S, decodeS, startupS }
}
