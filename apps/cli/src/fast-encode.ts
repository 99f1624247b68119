/**
 * `xbzrle -c` on the first byte's path (see isFastEncode): stdin → EncodeStream → stdout with the same defaults,
 * messages and exit codes as `xbzrle encode`, loading only the encoder. The end-of-input check is its own small module.
 */
import { pipeline } from 'node:stream/promises'
import { EncodeStream } from '@xbzrle/adapter-libvirt/filter'
import { installSignalHandlers } from './atomic-output.js'
import { classify, ExitCode } from './errors.js'
import { checkInput } from './input-check.js'
import { assertStdoutNotInput, defaultCompression, openInput } from './io.js'

export async function fastEncode(): Promise<number> {
  try {
    installSignalHandlers()
    assertStdoutNotInput(undefined)
    const enc = new EncodeStream({ compression: defaultCompression(undefined) }).drainsInto(process.stdout)
    await pipeline(openInput(undefined), enc, process.stdout)
    checkInput(enc.encoder.stats)
    return ExitCode.OK
  } catch (e) {
    const c = classify(e)
    process.stderr.write(`xbzrle: ${c.message}\n`)
    if (c.hint) process.stderr.write(`hint: ${c.hint}\n`)
    return c.exitCode
  }
}
