/**
 * Atomic named output files: a command never leaves a partial, empty or clobbered file under the name the user
 * gave. Bytes go to a temporary file in the same directory (`.NAME.xbzrle-tmp-PID-RAND`), which is fsynced and
 * renamed over the target only by commit(); the directory is fsynced after the rename. abort(), any failure and
 * any handled signal remove the temporary file and leave an existing target exactly as it was.
 *
 * - An existing target keeps its permission bits (and, when running as root, its owner); a new one gets
 *   `opts.mode` (default 0o666) minus the umask, like any file a command creates.
 * - A symlink as the target is followed: the file it points to is replaced, the link stays. An existing file
 *   this process may not write is refused (exit 4), as it was when outputs were written in place. The file is
 *   replaced by a new inode: other hard links to it keep the old contents; ACLs and xattrs are not copied.
 * - A target that exists and is not a regular file (/dev/null, a FIFO, a character device) is written directly:
 *   there is nothing to replace atomically, and renaming over a device node would be wrong.
 * - `opts.sameAs` lists input paths that must not be the output (same st_dev + st_ino, so hard links and
 *   symlinks are caught); `'-'` means stdin, compared through fstat(0) when stdin is a regular file. Such an
 *   output is refused with a CliError (exit 2) before anything is created.
 * - Signals: while any AtomicOutput is open (or after installSignalHandlers()), SIGINT, SIGTERM and SIGHUP remove every open temporary file
 *   (synchronously, in the handler). If no other part of the program listens for that signal, the process then
 *   prints one line (`xbzrle: interrupted by SIGTERM; FILE left unchanged`) and exits with 128 + the signal
 *   number (130, 143, 129), the status a shell reports for a command killed by that signal. If another
 *   listener exists, it decides how the process ends (and commit() of an output aborted that way rejects).
 *   Node ignores SIGPIPE: a closed pipe surfaces as an EPIPE error, which the command's failure path handles.
 *   SIGKILL cannot be handled; the temporary file it leaves is named so that it is recognisable.
 * - A process exit with outputs still open (an uncaught error) removes their temporary files too.
 */
import {
  access,
  close,
  constants,
  createWriteStream,
  fchmod,
  fchown,
  fstat,
  fstatSync,
  fsync,
  open,
  realpath,
  renameSync,
  type Stats,
  stat,
  unlink,
  unlinkSync,
} from 'node:fs'
import { constants as osConstants } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import type { Writable } from 'node:stream'
import { promisify } from 'node:util'
import { IO_CHUNK } from '@xbzrle/adapter-libvirt/filter'
import { CliError, ExitCode } from './errors.js'

export interface AtomicOutput {
  /** Write the output here; end it (or let a pipeline end it) before commit(). */
  stream: Writable
  /**
   * The temporary file's descriptor, for a caller that writes synchronously instead of through `stream` (never
   * both); undefined for a device or FIFO, which is written through `stream` only.
   */
  fd?: number
  /** The path the output will have (as given by the caller). */
  path: string
  /** Waits for the stream to finish, fsyncs, renames over the target and fsyncs the directory. */
  commit(): Promise<void>
  /** Discards what was written: the temporary file is removed and the target is left as it was. */
  abort(): Promise<void>
}

export interface AtomicOutputOptions {
  /** Input paths that must not be the output ('-' = stdin, checked when it is a regular file). */
  sameAs?: string[]
  /** Permission bits of a new file before the umask (default 0o666). An existing file keeps its own. */
  mode?: number
}

const openP = promisify(open)
const accessP = promisify(access)
const closeP = promisify(close)
const fsyncP = promisify(fsync)
const fstatP = promisify(fstat)
const fchmodP = promisify(fchmod)
const fchownP = promisify(fchown)
const statP = promisify(stat)
// realpath(3), as fs/promises' realpath, without loading fs/promises (~2 ms of `xbzrle -c`'s start).
const realpathP = promisify(realpath.native)
const unlinkP = promisify(unlink)

interface Entry {
  /** As given by the caller, for messages. */
  path: string
  /** Temporary file; undefined when writing directly (a device or FIFO). */
  tmp: string | undefined
  existed: boolean
}

/** Every open AtomicOutput of this process: what a signal handler must clean up. */
const registry = new Set<Entry>()
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function removeTempSync(e: Entry): void {
  if (e.tmp === undefined) return
  try {
    unlinkSync(e.tmp)
  } catch {
    // already gone
  }
}

/** Removes the temporary file of every open output, synchronously (signal handlers, process exit). */
export function abortAllSync(): Entry[] {
  const entries = [...registry]
  registry.clear()
  for (const e of entries) removeTempSync(e)
  return entries
}

/** Synchronous callbacks run before the interrupt message (e.g. a progress bar finishing its line). */
const beforeMessage = new Set<() => void>()

/** Registers `fn` to run (synchronously) before the interrupt message is printed; returns an unregister. */
export function onInterrupt(fn: () => void): () => void {
  beforeMessage.add(fn)
  return () => beforeMessage.delete(fn)
}

function onSignal(sig: (typeof SIGNALS)[number]): void {
  const aborted = abortAllSync()
  // Other listeners (e.g. a server's graceful stop) decide how the process ends.
  if (process.listenerCount(sig) > 1) {
    disarmIfIdle()
    return
  }
  for (const fn of beforeMessage) {
    try {
      fn()
    } catch {
      // the message matters more
    }
  }
  const what = aborted
    .map((e) => (e.existed ? `${e.path} left unchanged` : `${e.path} not written`))
    .join(', ')
  process.stderr.write(`xbzrle: interrupted by ${sig}${what ? `; ${what}` : ''}\n`)
  process.exit(128 + osConstants.signals[sig])
}

let explicit = false
let armed = false
let exitHook = false

function arm(): void {
  if (!exitHook) {
    exitHook = true
    process.on('exit', () => {
      abortAllSync()
    })
  }
  if (armed) return
  armed = true
  for (const sig of SIGNALS) process.on(sig, onSignal)
}

/** Handlers installed only for open outputs go away with the last one (the program's own behaviour returns). */
function disarmIfIdle(): void {
  if (!armed || explicit || registry.size > 0) return
  armed = false
  for (const sig of SIGNALS) process.off(sig, onSignal)
}

function track(e: Entry): void {
  registry.add(e)
  arm()
}

function untrack(e: Entry): void {
  registry.delete(e)
  disarmIfIdle()
}

/**
 * Installs the SIGINT/SIGTERM/SIGHUP handlers for the rest of the process (idempotent): a command that writes
 * to stdout calls it to get the one-line message and the 128 + signal exit status too. Without this call the
 * handlers are installed only while an AtomicOutput is open.
 */
export function installSignalHandlers(): void {
  explicit = true
  arm()
}

function statOrUndefined(path: string): Promise<Stats | undefined> {
  return statP(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined
    throw e
  })
}

function sameInode(a: Stats, b: Stats): boolean {
  return a.dev === b.dev && a.ino === b.ino
}

/**
 * Throws a usage error if `output` (an existing file's stats) is one of `inputs`; '-' stands for stdin.
 * Inputs that do not exist are ignored (opening them fails later with its own message).
 */
export async function assertNotSameFile(
  output: Stats,
  outputName: string,
  inputs: readonly string[],
): Promise<void> {
  for (const input of inputs) {
    let st: Stats | undefined
    if (input === '-') {
      try {
        const s = fstatSync(0)
        st = s.isFile() ? s : undefined
      } catch {
        st = undefined
      }
    } else st = await statOrUndefined(input)
    if (st && sameInode(st, output)) {
      const what = input === '-' ? 'stdin' : `the input ${input}`
      throw new CliError(
        `output ${outputName} is the same file as ${what}: refusing to overwrite the input`,
        ExitCode.USAGE,
      )
    }
  }
}

function ioError(e: unknown, path: string, doing: string): CliError | unknown {
  const code = (e as NodeJS.ErrnoException).code
  const why =
    code === 'ENOENT'
      ? 'no such directory'
      : code === 'EACCES' || code === 'EPERM'
        ? 'permission denied'
        : code === 'EISDIR'
          ? 'is a directory'
          : code === 'ENOSPC'
            ? 'no space left on device'
            : code === 'EROFS'
              ? 'read-only file system'
              : code
  return why ? new CliError(`cannot ${doing} ${path}: ${why}`, ExitCode.IO) : e
}

function waitClosed(stream: Writable): Promise<void> {
  return new Promise((res) => {
    if (stream.closed) res()
    else stream.once('close', () => res())
  })
}

function waitFinished(stream: Writable): Promise<void> {
  return new Promise((res, rej) => {
    if (stream.writableFinished) return res()
    if (stream.destroyed) return rej(stream.errored ?? new Error('output stream was destroyed'))
    const onFinish = () => {
      stream.off('error', onError)
      res()
    }
    const onError = (e: Error) => {
      stream.off('finish', onFinish)
      rej(e)
    }
    stream.once('finish', onFinish)
    stream.once('error', onError)
    if (!stream.writableEnded) stream.end()
  })
}

async function fsyncDir(dir: string): Promise<void> {
  let fd: number | undefined
  try {
    fd = await openP(dir, constants.O_RDONLY | constants.O_DIRECTORY)
    await fsyncP(fd)
  } catch (e) {
    // Some file systems cannot fsync a directory; the rename itself has happened.
    const code = (e as NodeJS.ErrnoException).code
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EBADF') throw e
  } finally {
    if (fd !== undefined) await closeP(fd).catch(() => {})
  }
}

export async function createAtomicOutput(
  path: string,
  opts: AtomicOutputOptions = {},
): Promise<AtomicOutput> {
  let existing: Stats | undefined
  try {
    existing = await statOrUndefined(path)
  } catch (e) {
    throw ioError(e, path, 'write')
  }
  if (existing?.isDirectory()) throw new CliError(`cannot write ${path}: is a directory`, ExitCode.IO)
  if (existing && opts.sameAs) await assertNotSameFile(existing, path, opts.sameAs)
  if (existing && !existing.isFile()) return directOutput(path)

  // Follow a symlink: its target is what gets replaced.
  let target = resolve(path)
  if (existing) {
    target = await realpathP(path)
    // A file we may not write stays protected, as it was when outputs were written in place.
    await accessP(target, constants.W_OK).catch((e) => {
      throw ioError(e, path, 'write')
    })
  }
  const dir = dirname(target)
  // node:crypto loaded here, not imported: `xbzrle -c` to a pipe never gets here, and it costs 3-5 ms of a start.
  const random = process.getBuiltinModule('node:crypto').randomBytes(4).toString('hex')
  const tmp = join(dir, `.${basename(target)}.xbzrle-tmp-${process.pid}-${random}`)
  const entry: Entry = { path, tmp, existed: existing !== undefined }
  let fd: number
  try {
    // Registered before the file exists: a signal between open() and registration cannot leak it.
    track(entry)
    fd = await openP(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
      existing ? 0o600 : (opts.mode ?? 0o666),
    )
  } catch (e) {
    untrack(entry)
    const err = ioError(e, path, 'write')
    if (err instanceof CliError && (e as NodeJS.ErrnoException).code === 'EACCES')
      throw new CliError(`${err.message} (creating a temporary file in ${dir})`, ExitCode.IO)
    throw err
  }
  try {
    if (existing) {
      await fchmodP(fd, existing.mode & 0o7777)
      if (process.getuid?.() === 0 && (existing.uid !== 0 || existing.gid !== 0))
        await fchownP(fd, existing.uid, existing.gid).catch(() => {})
    }
  } catch (e) {
    untrack(entry)
    await closeP(fd).catch(() => {})
    await unlinkP(tmp).catch(() => {})
    throw ioError(e, path, 'write')
  }

  const stream = createWriteStream('', { fd, autoClose: false, highWaterMark: IO_CHUNK })
  let state: 'open' | 'committed' | 'aborted' = 'open'
  let fdOpen = true
  const closeFd = async () => {
    if (!fdOpen) return
    fdOpen = false
    await closeP(fd)
  }

  const abort = async (): Promise<void> => {
    if (state !== 'open') return
    state = 'aborted'
    untrack(entry)
    // Wait for writes in flight before closing the descriptor they use.
    if (!stream.closed) {
      stream.destroy()
      await waitClosed(stream)
    }
    await closeFd().catch(() => {})
    await unlinkP(tmp).catch(() => {})
  }

  const commit = async (): Promise<void> => {
    if (state === 'committed') return
    if (state === 'aborted' || !registry.has(entry))
      throw new CliError(`output ${path} was discarded (interrupted)`, ExitCode.IO)
    try {
      await waitFinished(stream)
      await fsyncP(fd)
      // The file must be what we think it is: nobody replaced the temporary file meanwhile.
      const st = await fstatP(fd)
      if (st.nlink === 0) throw new CliError(`temporary file for ${path} was removed`, ExitCode.IO)
      await closeFd()
    } catch (e) {
      await abort()
      throw ioError(e, path, 'write')
    }
    // A signal handled after this point no longer concerns this output: it is complete.
    if (!registry.has(entry)) throw new CliError(`output ${path} was discarded (interrupted)`, ExitCode.IO)
    try {
      // Synchronous: no signal handler can run between the rename and leaving the registry.
      renameSync(tmp, target)
    } catch (e) {
      await abort()
      throw ioError(e, path, 'replace')
    }
    untrack(entry)
    state = 'committed'
    await fsyncDir(dir).catch((e) => {
      throw ioError(e, dir, 'sync directory')
    })
  }

  return { stream, fd, path, commit, abort }
}

/** Devices and FIFOs are written as they are (no temporary file, nothing to clean up). */
function directOutput(path: string): AtomicOutput {
  const stream = createWriteStream(path, { flags: 'w', highWaterMark: IO_CHUNK })
  let done = false
  return {
    stream,
    path,
    async commit() {
      if (done) return
      await waitFinished(stream)
      await waitClosed(stream)
      done = true
    },
    async abort() {
      if (done) return
      done = true
      stream.destroy()
      await waitClosed(stream)
    },
  }
}
