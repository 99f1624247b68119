/**
 * The unix sockets of the proxy: the one the source half listens on (for the source QEMU / libvirtd) and the
 * one of the destination QEMU it connects to. A path that holds a live socket of someone else is never taken,
 * and on exit only our own socket file is removed.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, lstatSync, renameSync, unlinkSync } from 'node:fs'
import { type Server, type Socket, connect as socketConnect } from 'node:net'
import { dirname, join } from 'node:path'
import { closeServer, listen } from './transport.js'

/** Identity (device, inode) of a socket file, to tell ours from one that replaced it. */
export interface SocketIdentity {
  dev: number
  ino: number
}

/**
 * Makes `path` free for a unix socket we are about to bind, without ever taking a live one: nothing there → ok;
 * a socket nobody accepts on (ECONNREFUSED: its owner died) → removed; a socket something accepts on → throws
 * "… is in use by another process"; anything that is not a socket → throws.
 */
export async function claimUnixPath(path: string): Promise<void> {
  let st: ReturnType<typeof lstatSync>
  try {
    st = lstatSync(path)
  } catch {
    return
  }
  if (!st.isSocket()) throw new Error(`unix:${path} exists and is not a socket; refusing to replace it`)
  const state = await new Promise<'live' | 'stale' | 'gone' | string>((resolve) => {
    const s = socketConnect({ path })
    const timer = setTimeout(() => {
      s.destroy()
      resolve('live') // a full backlog is a live listener too
    }, 2000)
    s.once('connect', () => {
      clearTimeout(timer)
      s.destroy()
      resolve('live')
    })
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve(e.code === 'ECONNREFUSED' ? 'stale' : e.code === 'ENOENT' ? 'gone' : (e.code ?? e.message))
    })
  })
  if (state === 'live') throw new Error(`unix:${path} is in use by another process`)
  if (state === 'stale') {
    try {
      unlinkSync(path)
    } catch {
      // removed meanwhile
    }
  } else if (state !== 'gone') {
    throw new Error(`unix:${path} exists and cannot be checked (${state}); refusing to replace it`)
  }
}

/**
 * Binds `server` at `path` (claimed first, see claimUnixPath) with file mode `mode`; returns the identity of the
 * socket file. Bound under a temporary name and renamed into place: libuv unlinks a unix server's path by name
 * when it closes, which would remove whatever socket is at `path` by then (another proxy's). The temporary name
 * is gone after the rename, so that unlink hits nothing; `unlinkIfOurs` removes `path`, only if it is ours.
 */
export async function bindUnixServer(
  server: Server,
  path: string,
  mode: number,
): Promise<SocketIdentity | undefined> {
  await claimUnixPath(path)
  const bound = join(dirname(path), `.xbz-${randomBytes(4).toString('hex')}`)
  await listen(server, { path: bound })
  try {
    chmodSync(bound, mode)
    renameSync(bound, path)
  } catch (e) {
    await closeServer(server)
    throw e
  }
  return socketIdentity(path)
}

function socketIdentity(path: string): SocketIdentity | undefined {
  try {
    const st = lstatSync(path)
    return st.isSocket() ? { dev: st.dev, ino: st.ino } : undefined
  } catch {
    return undefined
  }
}

/** Removes `path` if it is still the socket file `ours` (another proxy may have taken the path since). */
export function unlinkIfOurs(path: string, ours: SocketIdentity | undefined): void {
  if (!ours) return
  const now = socketIdentity(path)
  if (now && now.dev === ours.dev && now.ino === ours.ino) {
    try {
      unlinkSync(path)
    } catch {
      // already gone
    }
  }
}

/** Connects to the destination QEMU's unix socket (half-close enabled). */
export function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = socketConnect({ path, allowHalfOpen: true })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`connecting to unix:${path} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    s.once('connect', () => {
      clearTimeout(timer)
      s.removeAllListeners('error')
      resolve(s)
    })
    s.once('error', (e) => {
      clearTimeout(timer)
      reject(new Error(`cannot connect to QEMU at unix:${path}: ${e.message}`))
    })
  })
}
