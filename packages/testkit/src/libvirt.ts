/**
 * libvirt for tests: a gate, `virsh`, the host's daemons (started when not running) or private daemon pairs in
 * mount namespaces (two "hosts" on one machine), and the domain XML of the test guest.
 */
import { execFile, spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { hasTool, requireQemu, type SkipContext, skipOrFail } from './tools.js'
import { sleep, type WaitForOptions, waitFor } from './wait.js'

const run = promisify(execFile)

/** libvirt URI of the host's system daemon. */
export const SYSTEM_LIBVIRT_URI = 'qemu:///system'

/**
 * Gate for tests that run libvirtd and virsh against qemu:///system (see skipOrFail): needs what requireQemu
 * needs, virsh, libvirtd and virtlogd, and root. With `namespaces`, also unshare and mount namespaces
 * (CAP_SYS_ADMIN), for startLibvirtInNamespace().
 */
export function requireLibvirt(ctx: SkipContext, options: { namespaces?: boolean } = {}): boolean {
  if (!requireQemu(ctx)) return false
  const tools = ['virsh', 'libvirtd', 'virtlogd', ...(options.namespaces ? ['unshare'] : [])]
  const missing = tools.filter((t) => !hasTool(t))
  if (missing.length) {
    return skipOrFail(
      ctx,
      `libvirt test needs ${missing.join(', ')} (apt-get install libvirt-daemon-system libvirt-clients util-linux)`,
    )
  }
  if (process.getuid?.() !== 0) return skipOrFail(ctx, 'libvirt test needs root (runs libvirtd and virsh)')
  if (options.namespaces && spawnSync('unshare', ['-m', '--propagation', 'private', 'true']).status !== 0) {
    return skipOrFail(ctx, 'libvirt test needs mount namespaces (unshare -m: CAP_SYS_ADMIN)')
  }
  return true
}

/** `virsh -c URI ARGS…`; returns stdout, throws with virsh's stderr. */
export async function virsh(uri: string, args: string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await run('virsh', ['-c', uri, ...args], { timeout: timeoutMs })
    return stdout
  } catch (e) {
    const err = e as Error & { stderr?: string }
    throw new Error(`virsh ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`)
  }
}

/** Wait until `virsh -c URI version` answers (default 20 s). */
export async function waitForLibvirt(uri: string, options: WaitForOptions = {}): Promise<void> {
  let last = ''
  await waitFor(
    () =>
      virsh(uri, ['version'], 10_000).then(
        () => true,
        (e: Error) => {
          last = e.message
          return false
        },
      ),
    () => `libvirtd at ${uri} (${last})`,
    { timeoutMs: 20_000, intervalMs: 200, ...options },
  )
}

/** True when something accepts connections on the unix socket `path`. */
export function unixSocketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** SIGTERM the process whose pid is in `pidFile` and wait (up to `timeoutMs`) until it is gone. No pid: no-op. */
export async function stopDaemon(pidFile: string, timeoutMs = 5000): Promise<void> {
  let pid: number
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim())
  } catch {
    return // never started
  }
  if (!Number.isInteger(pid) || pid <= 1) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return // already gone
  }
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    await sleep(100)
  }
}

/** Daemons a test uses; stop() stops only what start* itself started. */
export interface LibvirtDaemons {
  uri: string
  stop(): Promise<void>
}

/**
 * The host's virtlogd and libvirtd for qemu:///system: a daemon whose socket answers is reused (and left running),
 * a missing one is started with `-d`. stop() stops only the daemons started here (by their pid files).
 */
export async function startHostLibvirt(): Promise<LibvirtDaemons> {
  const started: string[] = []
  const stop = async () => {
    for (const pidFile of started.splice(0).reverse()) await stopDaemon(pidFile)
  }
  const daemons = [
    { name: 'virtlogd', pidFile: '/run/virtlogd.pid', socket: '/run/libvirt/virtlogd-sock' },
    { name: 'libvirtd', pidFile: '/run/libvirtd.pid', socket: '/run/libvirt/libvirt-sock' },
  ]
  try {
    for (const d of daemons) {
      // Ask the socket, not pgrep: daemons in other mount namespaces (startLibvirtInNamespace) do not count.
      if (await unixSocketAnswers(d.socket)) continue
      const r = spawnSync(d.name, ['-d'], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`${d.name} -d failed: ${r.stderr}`)
      started.push(d.pidFile)
    }
    await waitForLibvirt(SYSTEM_LIBVIRT_URI)
  } catch (e) {
    await stop()
    throw e
  }
  return { uri: SYSTEM_LIBVIRT_URI, stop }
}

export interface NamespaceLibvirtOptions {
  /**
   * Give the daemons a private /etc/libvirt too: a copy of the host's in `base`/etc, handed to this function
   * before the daemons start (e.g. to append `save_image_format = "lzop"` to qemu.conf).
   */
  configureEtc?: (etcDir: string) => void
  /** PATH of the daemons (and so of the helpers libvirt runs, such as lzop). Default: this process's. */
  path?: string
}

export interface NamespaceLibvirt extends LibvirtDaemons {
  base: string
  /** Pid files of the two daemons (read them for the pids). */
  pidFiles: { libvirtd: string; virtlogd: string }
}

/**
 * A private virtlogd + libvirtd pair in its own mount namespace (`unshare -m`): /run/libvirt, /var/lib/libvirt
 * (a copy of the host's), /var/log/libvirt and /var/cache/libvirt are bind mounts of directories under `base`,
 * so the host still reaches the daemon's socket at `base`/run/libvirt-sock, and a fresh host_uuid makes two such
 * instances two "hosts" for `virsh migrate`. stop() SIGTERMs both; domains are not destroyed by it.
 */
export async function startLibvirtInNamespace(
  base: string,
  options: NamespaceLibvirtOptions = {},
): Promise<NamespaceLibvirt> {
  for (const d of ['run', 'log', 'cache']) mkdirSync(join(base, d), { recursive: true })
  const copies: [string, string][] = [['/var/lib/libvirt', 'lib']]
  if (options.configureEtc) copies.push(['/etc/libvirt', 'etc'])
  for (const [from, to] of copies) {
    const cp = spawnSync('cp', ['-a', from, join(base, to)], { encoding: 'utf8' })
    if (cp.status !== 0) throw new Error(`cp -a ${from} failed: ${cp.stderr}`)
  }
  options.configureEtc?.(join(base, 'etc'))
  writeFileSync(join(base, 'libvirtd.conf'), `host_uuid = "${randomUUID()}"\n`)
  const pidFiles = { libvirtd: join(base, 'libvirtd.pid'), virtlogd: join(base, 'virtlogd.pid') }
  const script = [
    ...(options.configureEtc ? [`mount --bind ${base}/etc /etc/libvirt`] : []),
    `mount --bind ${base}/run /run/libvirt`,
    `mount --bind ${base}/lib /var/lib/libvirt`,
    `mount --bind ${base}/log /var/log/libvirt`,
    `mount --bind ${base}/cache /var/cache/libvirt`,
    `virtlogd -d -p ${pidFiles.virtlogd}`,
    `libvirtd -d -f ${base}/libvirtd.conf -p ${pidFiles.libvirtd}`,
  ].join(' && ')
  mkdirSync('/run/libvirt', { recursive: true })
  const daemons: NamespaceLibvirt = {
    base,
    uri: `qemu+unix:///system?socket=${base}/run/libvirt-sock`,
    pidFiles,
    stop: async () => {
      await stopDaemon(pidFiles.libvirtd)
      await stopDaemon(pidFiles.virtlogd)
    },
  }
  try {
    const env = options.path === undefined ? process.env : { ...process.env, PATH: options.path }
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
      encoding: 'utf8',
      env,
    })
    if (r.status !== 0) throw new Error(`starting libvirtd in a mount namespace failed: ${r.stderr}`)
    await waitForLibvirt(daemons.uri)
  } catch (e) {
    await daemons.stop()
    throw e
  }
  return daemons
}

/**
 * Writes `<dir>/qemu-tcg-dirty-workaround`, an emulator for libvirt domains that runs
 * /usr/bin/qemu-system-x86_64 with 8 KiB more guest RAM than libvirt asks for, and returns its path.
 *
 * Why: QEMU 7.2 under TCG loses dirty pages during a live migration when guest RAM is a multiple of 256 KiB
 * (README: "QEMU 7.2 + TCG loses dirty pages"). The harness avoids it with `-m <N*1024+8>K`, but libvirt rounds
 * `<memory>` to whole MiB, so a libvirt live migration can resume a destination guest with a stale stack that
 * never runs again. The wrapper rewrites libvirt 9's `-m <MiB>` and the `pc.ram` memory backend's `"size"`, the
 * two places that carry the RAM size, and refuses (exit 1, one line) a command line it does not recognise.
 * Both ends of a migration must use it (the migratable XML keeps the `<emulator>`). Not for KVM hosts.
 */
export function writeTcgDirtyWorkaroundEmulator(dir: string, qemu = '/usr/bin/qemu-system-x86_64'): string {
  const path = join(dir, 'qemu-tcg-dirty-workaround')
  const script = `#!/bin/bash
extra=8192 id='"id":"pc.ram"' size='"size":([0-9]+)' args=() prev=
for a in "$@"; do
  arg=$a
  if [[ $prev == -m ]]; then
    [[ $a =~ ^[0-9]+$ ]] || { echo "qemu-tcg-dirty-workaround: unexpected -m $a" >&2; exit 1; }
    a="$((a * 1024 + extra / 1024))K"
  elif [[ $prev == -object && $a == *$id* && $a =~ $size ]]; then
    a=\${a/"\${BASH_REMATCH[0]}"/'"size":'$((BASH_REMATCH[1] + extra))}
  fi
  args+=("$a") prev=$arg
done
exec ${qemu} "\${args[@]}"
`
  writeFileSync(path, script, { mode: 0o755 })
  return path
}

/** Domain XML running the testkit guest under TCG with COM1 into `serial` (64 MiB, one vCPU, no devices). */
export function testGuestDomainXml(o: {
  name: string
  kernel: string
  cmdline: string
  serial: string
  memMiB?: number
  emulator?: string
}): string {
  return `<domain type='qemu'>
  <name>${o.name}</name>
  <memory unit='KiB'>${(o.memMiB ?? 64) * 1024}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${o.kernel}</kernel>
    <cmdline>${o.cmdline}</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${o.emulator ?? '/usr/bin/qemu-system-x86_64'}</emulator>
    <serial type='file'><source path='${o.serial}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none'/>
</domain>
`
}
