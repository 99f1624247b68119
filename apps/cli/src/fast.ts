/**
 * The fast bundle (dist/fast.cjs, scripts/bundle.mjs): what bin/xbzrle.js runs for the forms fastForm picks
 * (helper-form.ts), loading the filters and nothing else (no option parser, no WebSocket, no metrics, no zod for
 * the stream):
 * - `xbzrle -c` / `xbzrle -dc`, stdin → stdout, with the same defaults, messages and exit codes as `xbzrle encode`
 *   and `xbzrle decode`: a regular file as output takes the file path (file-filter.ts), anything else the
 *   stream path, exactly as the whole CLI would;
 * - `xbzrle --libvirt-helper=NAME ...` (libvirt-helper/helper.ts).
 */
import { pipeline } from 'node:stream/promises'
import { installSignalHandlers } from './atomic-output.js'
import { ExitCode, reportError } from './errors.js'
import { decoderFor, encoderFor, feedFilter, fileOutputSource, fileToFile } from './file-filter.js'
import { checkInput } from './input-check.js'
import {
  assertStdoutNotInput,
  bypassMode,
  defaultCompression,
  defaultThreads,
  openInput,
  stdoutIsPipe,
} from './io.js'
import { WriteBehindDecoder } from './write-behind.js'

// For scripts/code-cache.cjs, which runs a small stream through them before it saves V8's code cache.
export { XbzrleDecoder, XbzrleEncoder } from '@xbzrle/adapter-libvirt/filter'
export { fastForm } from './helper-form.js'
// For dist/helper-config.cjs (the helper config's schema, bundled apart): the one copy of what it shares with the
// filters, above all the error class the helper recognises with instanceof.
export { parseSize } from './io.js'
export {
  DEFAULT_HELPER_CONF,
  encoderOptionsOf,
  HelperConfigError,
} from './libvirt-helper/config-file.js'
export { runHelper } from './libvirt-helper/helper.js'

const NO_PROGRESS = () => undefined

/**
 * process.stdout, for the stream paths. Created only here: creating it makes a pipe on fd 1 non-blocking, and the
 * write-behind path writes fd 1 itself. A reader that stops early is no crash: the pipeline sees EPIPE through its
 * own error handling (exit 4), and an error after it is dropped.
 */
function stdout(): NodeJS.WriteStream {
  const out = process.stdout
  if (out.listenerCount('error') === 0) out.on('error', () => {})
  return out
}

export async function fastFilter(kind: 'encode' | 'decode'): Promise<number> {
  try {
    installSignalHandlers()
    assertStdoutNotInput(undefined)
    const source = fileOutputSource(undefined, undefined)
    if (kind === 'encode') {
      const options = {
        compression: defaultCompression(undefined),
        threads: defaultThreads(undefined, typeof source === 'object'),
        bypass: bypassMode(),
      }
      const { sink, encoder, stream } = encoderFor(source, options)
      const check = () => checkInput(encoder.stats)
      if (!stream) await fileToFile(undefined, undefined, source!, sink, encoder, true, NO_PROGRESS, check)
      else {
        await pipeline(openInput(undefined), stream.drainsInto(stdout()), stdout())
        check()
      }
    } else if (source === undefined && stdoutIsPipe(true)) {
      // A pipe out (QEMU's stdin at a migration's destination), or a socket: each verified batch is written
      // straight to fd 1 behind the decoding of the next (write-behind.ts), from two reused buffers, not through
      // process.stdout.
      await feedFilter(openInput(undefined), new WriteBehindDecoder({ fd: 1 }), {
        reuse: false,
        idleFlush: false,
      })
    } else {
      const { sink, filter, stream } = decoderFor(source, {})
      if (!stream)
        await fileToFile(undefined, undefined, source!, sink, filter!, false, NO_PROGRESS, () => {})
      else await pipeline(openInput(undefined), stream, stdout())
    }
    return ExitCode.OK
  } catch (e) {
    return reportError(e)
  }
}
