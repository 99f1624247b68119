/**
 * `xbzrle libvirt install | uninstall | status`. Every system path is relative to `root` (default /) or given
 * explicitly, so tests run in a temp tree. install records what it changed in a manifest; uninstall undoes exactly
 * that.
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { CliError, ExitCode } from '../errors.js'
import { loadHelperConfig } from './config.js'
import { describeLibvirtImage, isHelperImage, readLibvirtImage } from './image.js'
import {
  divertedPath,
  findRealProgram,
  type HelperProgram,
  isHelperWrapper,
  WRAPPER_MARKER,
  whichOnPath,
} from './real-program.js'

export const LIBVIRT_FORMATS = ['raw', 'gzip', 'bzip2', 'xz', 'lzop', 'zstd'] as const
export const FORMAT_KEYS = ['save_image_format', 'dump_image_format', 'snapshot_image_format'] as const
export type FormatKey = (typeof FORMAT_KEYS)[number]
const DEFAULT_DAEMON_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export interface CommonOptions {
  /** Prefix of every system path (default /). */
  root?: string
  qemuConf?: string
  manifest?: string
  /** Where managed-save images live (default ROOT/var/lib/libvirt/qemu/save). */
  saveDir?: string
  /** libvirtd processes to look at (default: every libvirtd / virtqemud in /proc). */
  pids?: number[]
  log?: (line: string) => void
}

export interface InstallOptions extends CommonOptions {
  /** divert (Debian: dpkg-divert + /usr/bin/NAME) or path-dir (a wrapper in pathDir). Default: path-dir when
   *  pathDir is given, else divert. */
  method?: 'divert' | 'path-dir'
  pathDir?: string
  programs?: HelperProgram[]
  /** The command the wrapper runs (default: this node and this xbzrle script). */
  exec?: string[]
  /** helper.conf the wrapper names (default: none, i.e. XBZRLE_HELPER_CONF or /etc/xbzrle/helper.conf). */
  config?: string
  writeDropIn?: boolean
  dropIn?: string
  setFormat?: string
  formatKeys?: FormatKey[]
  dpkgDivert?: string
  force?: boolean
}

export interface Manifest {
  version: 1
  method: 'divert' | 'path-dir'
  root: string
  installedAt: string
  programs: { name: HelperProgram; wrapper: string; diverted?: { from: string; to: string } }[]
  dropIn?: { path: string; content: string }
  qemuConf?: {
    path: string
    backup: string
    sha256After: string
    changes: { key: string; line: number; before?: string; after: string }[]
  }
}

function R(root: string | undefined, p: string): string {
  return !root || root === '/' ? p : join(root, p)
}

function paths(o: CommonOptions) {
  return {
    qemuConf: o.qemuConf ?? R(o.root, '/etc/libvirt/qemu.conf'),
    manifest: o.manifest ?? R(o.root, '/var/lib/xbzrle/libvirt-helper.json'),
    saveDir: o.saveDir ?? R(o.root, '/var/lib/libvirt/qemu/save'),
  }
}

const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex')
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

// ---------------------------------------------------------------------------------------------- qemu.conf

/** The uncommented value of `key` in qemu.conf text (last one wins, as in libvirt). */
export function confValue(text: string, key: string): string | undefined {
  let v: string | undefined
  for (const line of text.split('\n')) {
    const m = new RegExp(`^\\s*${key}\\s*=\\s*"([^"]*)"`).exec(line)
    if (m) v = m[1]
  }
  return v
}

export function formatsInUse(qemuConf: string): Record<FormatKey, string> {
  let text = ''
  try {
    text = readFileSync(qemuConf, 'utf8')
  } catch {
    // no qemu.conf: libvirt's defaults
  }
  const out = {} as Record<FormatKey, string>
  for (const k of FORMAT_KEYS) out[k] = confValue(text, k) ?? 'raw'
  return out
}

/**
 * Sets `key = "value"` in qemu.conf text: replaces the last active line, else uncomments the commented default
 * (`#key = ...`), else appends. Returns the new text and what changed.
 */
export function setConfValue(
  text: string,
  key: string,
  value: string,
): { text: string; change?: { key: string; line: number; before?: string; after: string } } {
  const lines = text.split('\n')
  const after = `${key} = "${value}"`
  let idx = -1
  for (let i = 0; i < lines.length; i++) if (new RegExp(`^\\s*${key}\\s*=`).test(lines[i]!)) idx = i
  if (idx < 0)
    for (let i = 0; i < lines.length; i++) if (new RegExp(`^#\\s*${key}\\s*=`).test(lines[i]!)) idx = i
  if (idx >= 0) {
    const before = lines[idx]!
    if (before === after) return { text }
    lines[idx] = after
    return { text: lines.join('\n'), change: { key, line: idx + 1, before, after } }
  }
  const trailing = text.endsWith('\n') || text === ''
  const newText = `${text}${trailing ? '' : '\n'}${after}\n`
  return { text: newText, change: { key, line: newText.split('\n').length - 1, after } }
}

// ---------------------------------------------------------------------------------------------- daemons

export interface DaemonInfo {
  pid: number
  name: string
  path: string
}

/** libvirtd / virtqemud processes and the PATH they were started with. */
export function runningDaemons(pids?: number[]): DaemonInfo[] {
  const list =
    pids ??
    readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
  const out: DaemonInfo[] = []
  for (const pid of list) {
    try {
      const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
      if (!pids && name !== 'libvirtd' && name !== 'virtqemud') continue
      const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')
      const p = env.find((e) => e.startsWith('PATH='))
      out.push({ pid, name, path: p ? p.slice(5) : DEFAULT_DAEMON_PATH })
    } catch {
      // gone, or not ours to read
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------- wrapper

export function defaultExec(): string[] {
  const script = process.argv[1]
  return [process.execPath, script ? realpathSync(script) : 'xbzrle']
}

export function wrapperScript(name: HelperProgram, exec: string[], config?: string): string {
  const args = [
    ...exec.map(shq),
    `--libvirt-helper=${name}`,
    ...(config ? [shq(`--helper-conf=${config}`)] : []),
    '--helper-wrapper="$0"',
    '"$@"',
  ]
  return [
    '#!/bin/sh',
    `# ${WRAPPER_MARKER}: stands in for ${name} so that libvirt writes and reads xbzrle streams.`,
    `# Installed by \`xbzrle libvirt install\`; \`xbzrle libvirt status\` explains, \`xbzrle libvirt uninstall\` removes it.`,
    `# Anything that is not an xbzrle save/restore goes to the real ${name}.`,
    '# The helper makes no TLS connection, and Node reads the certificates NODE_EXTRA_CA_CERTS names at every',
    '# start (50-90 ms here for a distribution bundle), while QEMU waits on a full pipe.',
    'unset NODE_EXTRA_CA_CERTS',
    `exec ${args.join(' ')}`,
    '',
  ].join('\n')
}

export function dropInText(pathDir: string): string {
  return [
    '# xbzrle libvirt helper: libvirtd finds the xbzrle wrapper first',
    '[Service]',
    `Environment=PATH=${pathDir}:${DEFAULT_DAEMON_PATH}`,
    '',
  ].join('\n')
}

// ---------------------------------------------------------------------------------------------- install

function readManifest(file: string): Manifest | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Manifest
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new CliError(`cannot read the install manifest ${file}: ${(e as Error).message}`, ExitCode.IO)
  }
}

function saveManifest(file: string, m: Manifest): void {
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, `${JSON.stringify(m, null, 2)}\n`)
}

function runDivert(o: { root?: string; dpkgDivert?: string }, args: string[]): void {
  const bin = o.dpkgDivert ?? 'dpkg-divert'
  const full = [...(o.root && o.root !== '/' ? ['--root', o.root] : []), ...args]
  const r = spawnSync(bin, full, { encoding: 'utf8' })
  if (r.error || r.status !== 0) {
    throw new CliError(
      `${bin} ${full.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim().split('\n')[0]}`,
      ExitCode.ENVIRONMENT,
    )
  }
}

export function install(o: InstallOptions): Manifest {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`))
  const p = paths(o)
  const root = o.root ?? '/'
  if (existsSync(p.manifest)) {
    throw new CliError(
      `the helper is already installed (manifest ${p.manifest}); run \`xbzrle libvirt uninstall\` first`,
      ExitCode.USAGE,
    )
  }
  const method = o.method ?? (o.pathDir ? 'path-dir' : 'divert')
  if (method === 'path-dir' && !o.pathDir) throw new CliError('--path-dir DIR is needed', ExitCode.USAGE)
  if (o.pathDir && !o.pathDir.startsWith('/'))
    throw new CliError('--path-dir must be absolute', ExitCode.USAGE)
  if (method === 'divert' && spawnSync(o.dpkgDivert ?? 'dpkg-divert', ['--version']).status !== 0) {
    throw new CliError(
      'dpkg-divert is not available: use --path-dir DIR (a wrapper in DIR and a systemd drop-in for libvirtd)',
      ExitCode.ENVIRONMENT,
    )
  }
  if (o.setFormat !== undefined && !(LIBVIRT_FORMATS as readonly string[]).includes(o.setFormat)) {
    throw new CliError(`--set-format must be one of ${LIBVIRT_FORMATS.join(', ')}`, ExitCode.USAGE)
  }
  // a broken config would break every save and restore: check it now
  if (o.config) loadHelperConfig(o.config)
  const programs = o.programs ?? ['lzop']
  const exec = o.exec ?? defaultExec()
  const formats = formatsInUse(p.qemuConf)
  const daemons = runningDaemons(o.pids)
  const dropInPath = o.dropIn ?? R(root, '/etc/systemd/system/libvirtd.service.d/xbzrle-helper.conf')

  // --- checks before touching anything
  const plan = programs.map((name) => {
    const wrapper = method === 'divert' ? R(root, `/usr/bin/${name}`) : join(R(root, o.pathDir!), name)
    if (existsSync(wrapper) && isHelperWrapper(wrapper)) {
      throw new CliError(
        `${wrapper} is already an xbzrle helper wrapper (no manifest: remove it by hand)`,
        ExitCode.USAGE,
      )
    }
    if (method === 'path-dir' && existsSync(wrapper)) {
      throw new CliError(`${wrapper} exists and is not ours: refusing to overwrite it`, ExitCode.USAGE)
    }
    if (method === 'divert' && existsSync(divertedPath(dirname(wrapper), name))) {
      throw new CliError(
        `${divertedPath(dirname(wrapper), name)} already exists: refusing to divert over it`,
        ExitCode.USAGE,
      )
    }
    // the real program the helper will fall back on, once installed
    let fallback: string | undefined
    if (method === 'divert') fallback = existsSync(wrapper) ? divertedPath(dirname(wrapper), name) : undefined
    else {
      const searchPaths = daemons.length
        ? daemons.map((d) => d.path)
        : [`${o.pathDir}:${DEFAULT_DAEMON_PATH}`]
      for (const sp of searchPaths) {
        const r = findRealProgram(name, {
          wrapper,
          path: sp
            .split(':')
            .map((d) => R(root, d))
            .join(':'),
          diverted: [],
        })
        fallback ??= r.found?.path
      }
    }
    const usedBy = FORMAT_KEYS.filter(
      (k) =>
        formats[k] === name || (o.setFormat === name && (o.formatKeys ?? ['save_image_format']).includes(k)),
    )
    if (!fallback && usedBy.length && !o.force) {
      throw new CliError(
        `libvirt uses ${usedBy.map((k) => `${k} = "${name}"`).join(', ')} and no real ${name} would be left for the images saved with it (install ${name} first, or pass --force)`,
        ExitCode.ENVIRONMENT,
      )
    }
    if (!fallback)
      log(`note: no real ${name} found: the helper will refuse ${name} files that are not xbzrle streams`)
    return { name, wrapper, fallback }
  })
  for (const d of daemons) {
    for (const { name } of plan) {
      const runs = whichOnPath(name, d.path)
      if (method === 'path-dir' && runs !== join(o.pathDir!, name)) {
        log(
          `note: ${d.name} (pid ${d.pid}) runs ${runs ?? `no ${name}`} on its PATH; it will use the helper once restarted with ${o.pathDir} first on its PATH (the drop-in below)`,
        )
      }
    }
  }

  const m: Manifest = { version: 1, method, root, installedAt: new Date().toISOString(), programs: [] }
  saveManifest(p.manifest, m)
  // --- wrappers
  for (const { name, wrapper, fallback } of plan) {
    const entry: Manifest['programs'][number] = { name, wrapper }
    if (method === 'divert') {
      const from = `/usr/bin/${name}`
      const to = `/usr/bin/${name}.distrib`
      runDivert(o, ['--local', '--rename', '--divert', to, '--add', from])
      entry.diverted = { from, to }
      log(`diverted ${from} to ${to} (dpkg-divert --local --rename)`)
    }
    m.programs.push(entry)
    saveManifest(p.manifest, m)
    mkdirSync(dirname(wrapper), { recursive: true })
    writeFileSync(wrapper, wrapperScript(name, exec, o.config))
    chmodSync(wrapper, 0o755)
    log(
      `wrote ${wrapper} (runs: ${exec.join(' ')} --libvirt-helper=${name}); real ${name}: ${fallback ?? 'none'}`,
    )
  }
  // --- systemd drop-in
  if (method === 'path-dir') {
    const text = dropInText(o.pathDir!)
    if (o.writeDropIn) {
      if (existsSync(dropInPath) && readFileSync(dropInPath, 'utf8') !== text) {
        throw new CliError(
          `${dropInPath} exists with other content: refusing to overwrite it`,
          ExitCode.USAGE,
        )
      }
      mkdirSync(dirname(dropInPath), { recursive: true })
      writeFileSync(dropInPath, text)
      m.dropIn = { path: dropInPath, content: text }
      saveManifest(p.manifest, m)
      log(`wrote ${dropInPath}; now: systemctl daemon-reload && systemctl restart libvirtd`)
    } else {
      log(`libvirtd must find ${o.pathDir} first on its PATH. A systemd drop-in (${dropInPath}) does it:`)
      log(text.trimEnd().replace(/^/gm, '    '))
      log('(write it with --write-drop-in, then: systemctl daemon-reload && systemctl restart libvirtd)')
    }
  }
  // --- qemu.conf
  if (o.setFormat) {
    const keys = o.formatKeys ?? ['save_image_format']
    let text = ''
    try {
      text = readFileSync(p.qemuConf, 'utf8')
    } catch (e) {
      throw new CliError(`cannot read ${p.qemuConf}: ${(e as NodeJS.ErrnoException).code}`, ExitCode.IO)
    }
    const changes: NonNullable<Manifest['qemuConf']>['changes'] = []
    for (const k of keys) {
      const r = setConfValue(text, k, o.setFormat)
      text = r.text
      if (r.change) changes.push(r.change)
    }
    if (changes.length === 0) log(`${p.qemuConf}: ${keys.join(', ')} already "${o.setFormat}", not changed`)
    else {
      const backup = `${p.qemuConf}.xbzrle-bak`
      if (existsSync(backup)) {
        throw new CliError(
          `${backup} exists: move it away first (install never overwrites a backup)`,
          ExitCode.USAGE,
        )
      }
      copyFileSync(p.qemuConf, backup)
      writeFileSync(p.qemuConf, text)
      m.qemuConf = { path: p.qemuConf, backup, sha256After: sha256(text), changes }
      saveManifest(p.manifest, m)
      log(`${p.qemuConf} (backup: ${backup}):`)
      for (const c of changes)
        log(
          c.before === undefined
            ? `  line ${c.line}: + ${c.after} (added)`
            : `  line ${c.line}: - ${c.before}\n  line ${c.line}: + ${c.after}`,
        )
      log('restart libvirtd to apply it')
    }
  }
  log(`installed (manifest ${p.manifest})`)
  return m
}

// ---------------------------------------------------------------------------------------------- images

export async function helperImagesIn(dirs: string[], files: string[] = []): Promise<string[]> {
  const all = [...files]
  for (const d of dirs) {
    try {
      for (const f of readdirSync(d)) if (f.endsWith('.save')) all.push(join(d, f))
    } catch {
      // no such dir
    }
  }
  const out: string[] = []
  for (const f of all) {
    const i = await readLibvirtImage(f).catch(() => undefined)
    if (i && isHelperImage(i)) out.push(f)
  }
  return out
}

// ---------------------------------------------------------------------------------------------- uninstall

export interface UninstallOptions extends CommonOptions {
  /** More images to check and convert (managed-save images in saveDir are always checked). */
  images?: string[]
  convertImages?: boolean
  force?: boolean
  dpkgDivert?: string
}

export async function uninstall(o: UninstallOptions): Promise<void> {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`))
  const p = paths(o)
  const m = readManifest(p.manifest)
  if (!m) throw new CliError(`the helper is not installed (no manifest at ${p.manifest})`, ExitCode.USAGE)
  const images = await helperImagesIn([p.saveDir], o.images)
  if (images.length && o.convertImages) {
    const { convertHelperImage } = await import('./image.js')
    for (const f of images) {
      await convertHelperImage(f, f)
      log(`converted ${f} to a raw save image`)
    }
  } else if (images.length && !o.force) {
    throw new CliError(
      `${images.length} image(s) written by the helper would no longer restore: ${images.join(', ')}; ` +
        'rerun with --convert-images (rewrites them as raw images) or --force',
      ExitCode.USAGE,
    )
  } else if (images.length) {
    for (const f of images)
      log(`warning: ${(await readLibvirtImage(f).then((i) => i && describeLibvirtImage(i, f))) ?? f}`)
  }
  // qemu.conf first (it was changed last)
  if (m.qemuConf) {
    const q = m.qemuConf
    let now = ''
    try {
      now = readFileSync(q.path, 'utf8')
    } catch {
      // gone: nothing to restore into
    }
    if (now && sha256(now) === q.sha256After && existsSync(q.backup)) {
      copyFileSync(q.backup, q.path)
      rmSync(q.backup)
      log(`${q.path}: restored from ${q.backup} (backup removed)`)
    } else if (now) {
      const lines = now.split('\n')
      for (const c of [...q.changes].reverse()) {
        const i = lines.lastIndexOf(c.after)
        if (i < 0) {
          log(`warning: ${q.path}: "${c.after}" is no longer there; ${c.key} left as it is`)
          continue
        }
        if (c.before === undefined) lines.splice(i, 1)
        else lines[i] = c.before
        log(`${q.path} line ${i + 1}: ${c.after} -> ${c.before ?? '(removed)'}`)
      }
      writeFileSync(q.path, lines.join('\n'))
      log(`${q.path} was edited since install: reverted our lines only; the backup ${q.backup} is kept`)
    }
    log('restart libvirtd to apply it')
  }
  if (m.dropIn) {
    if (existsSync(m.dropIn.path) && readFileSync(m.dropIn.path, 'utf8') === m.dropIn.content) {
      rmSync(m.dropIn.path)
      log(`removed ${m.dropIn.path}; now: systemctl daemon-reload && systemctl restart libvirtd`)
    } else log(`warning: ${m.dropIn.path} was changed or removed since install: left as it is`)
  }
  for (const e of [...m.programs].reverse()) {
    if (existsSync(e.wrapper)) {
      if (isHelperWrapper(e.wrapper)) {
        rmSync(e.wrapper)
        log(`removed ${e.wrapper}`)
      } else log(`warning: ${e.wrapper} is no longer our wrapper: left as it is`)
    }
    if (e.diverted) {
      runDivert({ ...o, root: m.root }, ['--local', '--rename', '--remove', e.diverted.from])
      log(`removed the diversion: ${e.diverted.to} is ${e.diverted.from} again`)
    }
  }
  rmSync(p.manifest)
  log('uninstalled')
}

// ---------------------------------------------------------------------------------------------- status

export interface StatusReport {
  installed: boolean
  manifest?: Manifest
  formats: Record<FormatKey, string>
  config: { ok: boolean; file?: string; error?: string }
  daemons: {
    pid: number
    name: string
    path: string
    programs: { name: string; runs?: string; helper: boolean; real?: string }[]
  }[]
  helperImages: string[]
  verdict: string[]
}

export async function status(o: CommonOptions & { programs?: HelperProgram[] }): Promise<StatusReport> {
  const p = paths(o)
  const root = o.root ?? '/'
  const manifest = readManifest(p.manifest)
  const formats = formatsInUse(p.qemuConf)
  const programs = o.programs ?? ['lzop', 'zstd']
  let config: StatusReport['config']
  try {
    config = { ok: true, file: loadHelperConfig().file }
  } catch (e) {
    config = { ok: false, error: (e as Error).message }
  }
  const daemons = runningDaemons(o.pids).map((d) => ({
    ...d,
    programs: programs.map((name) => {
      const rooted = d.path
        .split(':')
        .map((x) => R(root, x))
        .join(':')
      const runs = whichOnPath(name, rooted)
      const helper = runs ? isHelperWrapper(runs) : false
      const real = helper ? findRealProgram(name, { wrapper: runs, path: rooted }).found?.path : runs
      return { name, runs, helper, real }
    }),
  }))
  const helperImages = await helperImagesIn([p.saveDir])
  const verdict: string[] = []
  if (daemons.length === 0) verdict.push('no libvirtd / virtqemud is running')
  const installedNames = new Set<string>(manifest?.programs.map((e) => e.name) ?? [])
  for (const d of daemons) {
    for (const pr of d.programs) {
      const used = FORMAT_KEYS.filter((k) => formats[k] === pr.name)
      // a program nobody installed, libvirt does not use and the daemon does not run as the helper: not relevant
      if (!pr.helper && !used.length && !installedNames.has(pr.name) && pr.name !== 'lzop') continue
      const tag = `${d.name} (pid ${d.pid})`
      if (pr.helper) {
        verdict.push(
          `${tag} runs the xbzrle helper as ${pr.name} (${pr.runs}); ${used.length ? `${used.join(', ')} = "${pr.name}": saves are written as xbzrle streams` : `no *_image_format is "${pr.name}" in qemu.conf: the helper is not used`}`,
        )
        verdict.push(`  images saved by the helper: restore`)
        verdict.push(
          `  images saved with the real ${pr.name}: ${pr.real ? `restore (the helper hands them to ${pr.real})` : `DO NOT restore: no real ${pr.name} found`}`,
        )
      } else {
        verdict.push(`${tag} runs ${pr.runs ?? `no ${pr.name}`} as ${pr.name} (not the helper)`)
        verdict.push(`  images saved with the real ${pr.name}: ${pr.runs ? 'restore' : 'DO NOT restore'}`)
        verdict.push(
          `  images saved by the helper: DO NOT restore; convert them with \`xbzrle libvirt convert IMAGE -o IMAGE.raw\` and restore IMAGE.raw`,
        )
      }
    }
  }
  for (const f of helperImages) verdict.push(`helper image: ${f}`)
  return { installed: !!manifest, manifest, formats, config, daemons, helperImages, verdict }
}

/** Absolute paths the wrapper's exec line names (node, the xbzrle script) that do not exist. */
export function wrapperTargetsMissing(wrapper: string): string[] {
  const line = readFileSync(wrapper, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('exec '))
  if (!line) return []
  const quoted = [...line.matchAll(/'([^']*)'/g)].map((m) => m[1]!).filter((w) => w.startsWith('/'))
  return quoted.filter((p) => !existsSync(p))
}

export function formatStatus(s: StatusReport): string {
  const lines: string[] = []
  if (s.manifest) {
    lines.push(`installed: yes (${s.manifest.method}, ${s.manifest.installedAt})`)
    for (const e of s.manifest.programs) {
      const ok = existsSync(e.wrapper) && isHelperWrapper(e.wrapper)
      const missing = ok ? wrapperTargetsMissing(e.wrapper) : []
      if (missing.length)
        lines.push(
          `  ${e.wrapper}: BROKEN, it runs ${missing.join(', ')}, which no longer exist(s); reinstall`,
        )
      lines.push(
        `  ${e.wrapper}: ${ok ? 'xbzrle helper wrapper' : 'MISSING or changed'}${e.diverted ? ` (real: ${e.diverted.to})` : ''}`,
      )
    }
  } else lines.push('installed: no')
  lines.push(`qemu.conf: ${FORMAT_KEYS.map((k) => `${k} = "${s.formats[k]}"`).join(', ')}`)
  lines.push(
    `helper config: ${s.config.ok ? (s.config.file ?? 'defaults (no file)') : `ERROR ${s.config.error}`}`,
  )
  lines.push(...s.verdict)
  return `${lines.join('\n')}\n`
}
