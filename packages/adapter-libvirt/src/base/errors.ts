import { type BaseRequirement, describeBaseRequirement, ProtocolError } from '@xbzrle/protocol/stream'

/** A base image problem: one line, code BASE_MISMATCH (the CLI's exit 3). */
export function baseError(what: string): ProtocolError {
  return new ProtocolError('BASE_MISMATCH', `xbzrle base: ${what}`)
}

/** `; the stream needs base sha256:…, N bytes, was NAME`: every refusal names the base it expected. */
export function needsBase(req: BaseRequirement): string {
  return `; the stream needs base ${describeBaseRequirement(req)}`
}

export function missingBaseError(req: BaseRequirement): ProtocolError {
  return baseError(`this stream was encoded against a base image; give it with --base FILE${needsBase(req)}`)
}
