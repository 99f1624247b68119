/**
 * The fast bundle (dist/fast.mjs): what bin/xbzrle.js runs for the forms fastForm picks (helper-form.ts), loading
 * the filters and nothing else (no option parser, no WebSocket, no metrics, no zod for the stream):
 * - `xbzrle -c` / `xbzrle -dc`, stdin → stdout, with the same defaults, messages and exit codes as `xbzrle encode`
 *   and `xbzrle decode`: a regular file as output takes the file path (file-filter.ts), anything else the
 *   stream path, exactly as the whole CLI would;
 * - `xbzrle --libvirt-helper=NAME ...` (libvirt-helper/helper.ts).
 */
import { pipeline } from 'node:stream/promises'
import { DecodeStream, EncodeStream, XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt/filter'
import { installSignalHandlers } from './atomic-output.js'
import { classify, ExitCode } from './errors.js'
import { fileOutputSource, fileToFile, type OutputSink, writeAll } from './file-filter.js'
import { checkInput } from './input-check.js'
import { assertStdoutNotInput, defaultCompression, defaultThreads, openInput } from './io.js'

export { runHelper } from './libvirt-helper/helper.js'

const NO_PROGRESS = () => undefined

export async function fastFilter(kind: 'encode' | 'decode'): Promise<number> {
  try {
    installSignalHandlers()
    assertStdoutNotInput(undefined)
    const source = fileOutputSource(undefined, undefined)
    const sink: OutputSink = { fd: 1 }
    if (kind === 'encode') {
      const options = { compression: defaultCompression(undefined), threads: defaultThreads() }
      if (source) {
        const enc = new XbzrleEncoder((c) => writeAll(sink, c), { ...options, chunkView: true })
        await fileToFile(undefined, undefined, source, sink, enc, true, NO_PROGRESS, () =>
          checkInput(enc.stats),
        )
      } else {
        const enc = new EncodeStream(options).drainsInto(process.stdout)
        await pipeline(openInput(undefined), enc, process.stdout)
        checkInput(enc.encoder.stats)
      }
    } else if (source) {
      const dec = new XbzrleDecoder((c) => writeAll(sink, c), { reuseOutput: true })
      await fileToFile(undefined, undefined, source, sink, dec, false, NO_PROGRESS, () => {})
    } else {
      await pipeline(openInput(undefined), new DecodeStream({}), process.stdout)
    }
    return ExitCode.OK
  } catch (e) {
    const c = classify(e)
    process.stderr.write(`xbzrle: ${c.message}\n`)
    if (c.hint) process.stderr.write(`hint: ${c.hint}\n`)
    return c.exitCode
  }
}
