/**
 * What an encode says about its input at the end (a truncated or unparseable QEMU stream). Its own small module:
 * the fast `xbzrle -c` path (fast.ts) loads it without the rest of the CLI.
 */
import type { EncoderStats } from '@xbzrle/adapter-libvirt'
import { CliError, ExitCode } from './errors.js'

/** After an encode: a warning on stderr about the input, if anything was wrong with it (an error with --strict). */
export function checkInput(stats: EncoderStats, strict?: boolean): void {
  const problem = inputProblem(stats)
  if (problem === undefined) return
  if (strict) throw new CliError(`${problem.text} (--strict)`, ExitCode.BAD_INPUT)
  const same = problem.truncated ? '; the output decodes to the same truncated bytes' : ''
  process.stderr.write(`xbzrle encode: warning: ${problem.text}${same}\n`)
}

/**
 * What was wrong with an encoded input, if anything: the QEMU stream ended early (inside an item, or between
 * items before QEMU's end of stream), or part of the input could not be parsed and was copied as it is. The
 * output is byte-exact in every case; this only says that the input itself is probably not what the user
 * wants to keep. A stream whose parse ends at the device state (the normal end for QEMU 7.2: FULL sections
 * cannot be delimited) or at the trailer is complete as far as the reader can tell; a cut inside the device
 * state, after the RAM part, cannot be told apart from a complete stream.
 */
export function inputProblem(s: EncoderStats): { text: string; truncated: boolean } | undefined {
  const q = s.qemu
  const pt = q.passthrough
  const prefix = s.bytesIn - q.bytes // a libvirt save image's header and XML, outside the QEMU reader
  const truncated = (text: string) => ({ text: `the QEMU stream is truncated: ${text}`, truncated: true })
  if (s.bytesIn === 0) return { text: 'the input is empty: no QEMU stream', truncated: false }
  if (pt === undefined) {
    if (q.bytes === 0)
      return truncated(`the input ended after ${s.bytesIn} bytes, before the QEMU stream began`)
    return truncated(`the input ended at byte ${s.bytesIn}, before QEMU's end of stream`)
  }
  switch (pt.reason) {
    case 'trailer':
    case 'device-state':
      return undefined
    case 'truncated':
      return truncated(`${pt.detail} at byte ${prefix + pt.offset}`)
    case 'not-qemu':
      return {
        text: `the input is not a QEMU migration stream (${pt.detail}): copied unchanged, nothing saved`,
        truncated: false,
      }
    default:
      return {
        text: `from byte ${prefix + pt.offset} on, the input was copied unparsed (${pt.detail})`,
        truncated: false,
      }
  }
}
