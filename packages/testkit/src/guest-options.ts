/** Options of a test-guest QEMU and the QEMU command line they make (pure: no process is started here). */
import { type GuestConfig, guestCommandLine } from './guest.js'

const MiB = 1024 * 1024

export interface StartGuestOptions {
  /** Kernel ELF; default: the test guest from buildTestGuest(). */
  kernel?: string
  /** Guest command line (string for -append, or a GuestConfig). Default: the guest's defaults. */
  append?: string | GuestConfig
  /** Guest RAM in MiB. Default 64. */
  memMiB?: number
  /**
   * Add 8 KiB to the RAM size (`-m <memMiB*1024+8>K`). Default true. QEMU 7.2 under TCG loses dirty pages
   * during live migration when the RAM block length is a multiple of 256 KiB: the fast dirty-bitmap sync
   * path clears the migration bits without re-arming TCG's TLB_NOTDIRTY, so writes through cached TLB
   * entries go unrecorded (newer QEMU calls cpu_physical_memory_dirty_bits_cleared() there). An odd size
   * forces the per-page slow path, which does reset the TLB. Without this, RAM after migration differs.
   */
  tcgDirtyWorkaround?: boolean
  /** `-incoming` value, e.g. 'defer', 'exec:cat < fifo', 'unix:/path'. */
  incoming?: string
  /** Start with -S (CPU stopped). Default: true when `incoming` is set, else false. */
  paused?: boolean
  /** Machine type. Default 'pc'. */
  machine?: string
  /** Extra QEMU arguments appended at the end. */
  extraArgs?: string[]
  /** Where the guest's COM1 goes. Default: serial.log in the process's temp dir. */
  serialFile?: string
  /** Label used in error messages and `-name`. */
  name?: string
  /** Timeout for QEMU to come up (QMP ready). Default 15000 ms. */
  startTimeoutMs?: number
}

/** Options after defaults were applied (kept on the process so a destination can mirror the source). */
export interface ResolvedGuestOptions {
  kernel: string
  append: string
  memMiB: number
  tcgDirtyWorkaround: boolean
  /** Actual guest RAM size in bytes (memMiB MiB, plus 8 KiB with tcgDirtyWorkaround). */
  ramBytes: number
  machine: string
  extraArgs: string[]
}

/** Apply the defaults of StartGuestOptions (the kernel is resolved by the caller: building it is async). */
export function resolveGuestOptions(opts: StartGuestOptions, kernel: string): ResolvedGuestOptions {
  const append = typeof opts.append === 'string' ? opts.append : guestCommandLine(opts.append ?? {})
  const memMiB = opts.memMiB ?? 64
  const tcgDirtyWorkaround = opts.tcgDirtyWorkaround ?? true
  return {
    kernel,
    append,
    memMiB,
    tcgDirtyWorkaround,
    ramBytes: memMiB * MiB + (tcgDirtyWorkaround ? 8192 : 0),
    machine: opts.machine ?? 'pc',
    extraArgs: [...(opts.extraArgs ?? [])],
  }
}

/**
 * QEMU arguments (without the binary) for a TCG test guest: one CPU, no devices but COM1 into `serialPath`
 * and QMP on the unix socket `qmpPath`; `-incoming` and `-S` as asked (paused defaults to true when incoming).
 */
export function qemuArgs(
  options: ResolvedGuestOptions,
  run: { name: string; serialPath: string; qmpPath: string; incoming?: string; paused?: boolean },
): string[] {
  const paused = run.paused ?? run.incoming !== undefined
  return [
    '-name',
    `xbzrle-testkit-${run.name},process=xbzrle-testkit-${run.name}`,
    '-machine',
    options.machine,
    '-accel',
    'tcg',
    '-smp',
    '1',
    '-m',
    `${options.ramBytes / 1024}K`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-nic',
    'none',
    '-serial',
    `file:${run.serialPath}`,
    '-qmp',
    `unix:${run.qmpPath},server=on,wait=off`,
    '-kernel',
    options.kernel,
    '-append',
    options.append,
    ...(run.incoming !== undefined ? ['-incoming', run.incoming] : []),
    ...(paused ? ['-S'] : []),
    ...options.extraArgs,
  ]
}
