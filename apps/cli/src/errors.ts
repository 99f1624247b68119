/**
 * Exit codes of the `xbzrle` command (documented in the README and `xbzrle --help`). A command interrupted by
 * SIGINT, SIGTERM or SIGHUP exits with 128 + the signal number (130, 143, 129), as a shell reports a command
 * killed by that signal, after one line on stderr; an `-o FILE` is then left as it was (see atomic-output.ts).
 */
export const ExitCode = {
  OK: 0,
  /** A bug or an unexpected condition: please report it (run with --debug for the stack). */
  INTERNAL: 1,
  /** Wrong command line. */
  USAGE: 2,
  /** The input is not what the command expects, or it is corrupt or truncated. */
  BAD_INPUT: 3,
  /** A file, pipe or socket could not be read or written. */
  IO: 4,
  /** The network peer refused or failed. */
  PEER: 5,
  /** Something the command needs is missing on this machine (e.g. qemu-system-x86_64 for `demo --qemu`). */
  ENVIRONMENT: 6,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

/** An error meant for the person at the terminal: one line, an exit code and an optional hint. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
    readonly hint?: string,
  ) {
    super(message)
  }
}

interface Classified {
  message: string
  exitCode: ExitCodeValue
  hint?: string
}

const IO_CODES = new Set([
  'ENOENT',
  'EACCES',
  'EISDIR',
  'ENOTDIR',
  'EPIPE',
  'EBADF',
  'ENOSPC',
  'EROFS',
  'EEXIST',
])
const PEER_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND'])

/** Maps any thrown value to what the CLI prints and the exit code. */
export function classify(e: unknown): Classified {
  if (e instanceof CliError) return { message: e.message, exitCode: e.exitCode, hint: e.hint }
  const err = e instanceof Error ? e : new Error(String(e))
  const name = err.name
  const code = (err as NodeJS.ErrnoException).code
  const firstLine = err.message.split('\n')[0] ?? ''
  if (
    name === 'ProtocolError' ||
    name === 'SaveImageError' ||
    name === 'XbzrleDecodeError' ||
    name === 'CacheDesyncError'
  ) {
    return { message: firstLine, exitCode: ExitCode.BAD_INPUT }
  }
  if (code && IO_CODES.has(code)) {
    const path = (err as NodeJS.ErrnoException).path
    const what =
      code === 'ENOENT' ? 'no such file' : code === 'EPIPE' ? 'output closed early (broken pipe)' : code
    return { message: path ? `${what}: ${path}` : `${what}: ${firstLine}`, exitCode: ExitCode.IO }
  }
  if (code && PEER_CODES.has(code)) return { message: firstLine, exitCode: ExitCode.PEER }
  if (name === 'PeerError' || name === 'TransportError')
    return { message: firstLine, exitCode: ExitCode.PEER }
  return {
    message: firstLine || name,
    exitCode: ExitCode.INTERNAL,
    hint: 'this looks like a bug; run with --debug for details',
  }
}

/**
 * Prints a failure as the CLI does: one `xbzrle: …` line, a hint line if there is one, the stack with --debug.
 * Returns the exit code.
 */
export function reportError(e: unknown, debug = false): ExitCodeValue {
  const c = classify(e)
  process.stderr.write(`xbzrle: ${c.message}\n`)
  if (c.hint) process.stderr.write(`hint: ${c.hint}\n`)
  if (debug && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`)
  return c.exitCode
}
