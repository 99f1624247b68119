import { type Command, InvalidArgumentError, Option } from 'commander'
import { CliError, ExitCode } from '../errors.js'
import { convertHelperImage, describeLibvirtImage, readLibvirtImage } from '../libvirt-helper/image.js'
import {
  FORMAT_KEYS,
  type FormatKey,
  formatStatus,
  install,
  LIBVIRT_FORMATS,
  status,
  uninstall,
} from '../libvirt-helper/install.js'
import { HELPER_PROGRAMS, type HelperProgram } from '../libvirt-helper/real-program.js'

export { runHelper } from '../libvirt-helper/helper.js'

function list<T extends string>(allowed: readonly T[]) {
  return (v: string): T[] => {
    const items = v.split(',').map((s) => s.trim())
    for (const i of items)
      if (!(allowed as readonly string[]).includes(i))
        throw new InvalidArgumentError(`expected a comma-separated list of ${allowed.join(', ')}`)
    return items as T[]
  }
}

function pids(v: string): number[] {
  const out = v.split(',').map(Number)
  if (out.some((n) => !Number.isInteger(n) || n <= 0)) throw new InvalidArgumentError('expected PID[,PID...]')
  return out
}

function words(v: string): string[] {
  const w = v.trim().split(/\s+/).filter(Boolean)
  if (w.length === 0 || !w[0]!.startsWith('/'))
    throw new InvalidArgumentError('expected an absolute command path')
  return w
}

function addCommon(c: Command): Command {
  return c
    .option('--root <dir>', 'prefix of every system path (for tests and chroots)', '/')
    .option('--qemu-conf <file>', 'qemu.conf (default ROOT/etc/libvirt/qemu.conf)')
    .option('--manifest <file>', 'install record (default ROOT/var/lib/xbzrle/libvirt-helper.json)')
    .option('--save-dir <dir>', 'managed-save images (default ROOT/var/lib/libvirt/qemu/save)')
    .option('--pid <pid,...>', 'libvirtd processes to check (default: every libvirtd/virtqemud)', pids)
}

/** Adds `xbzrle libvirt install | uninstall | status | convert | check`. */
export function registerLibvirtCommand(program: Command): void {
  const lv = program
    .command('libvirt')
    .description(
      'let libvirt run xbzrle itself as its lzop/zstd helper (install, uninstall, status, convert)',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  xbzrle libvirt install                         # Debian: dpkg-divert /usr/bin/lzop, wrapper in its place\n  xbzrle libvirt install --path-dir /usr/local/lib/xbzrle/bin --write-drop-in\n  xbzrle libvirt status\n  xbzrle libvirt convert vm.save -o vm.raw.save   # helper image -> raw image (restores without the helper)\n  xbzrle libvirt uninstall --convert-images\n',
    )

  addCommon(lv.command('install'))
    .description('install the helper: a wrapper named lzop (and/or zstd) that libvirt runs')
    .option(
      '--path-dir <dir>',
      'put the wrapper in DIR (libvirtd needs DIR first on its PATH) instead of dpkg-divert',
    )
    .addOption(new Option('--method <method>', 'how to install').choices(['divert', 'path-dir']))
    .option('--programs <list>', 'programs to stand in for (lzop, zstd)', list(HELPER_PROGRAMS), ['lzop'])
    .option('--exec <command>', 'what the wrapper runs (default: this node and this xbzrle)', words)
    .option('--config <file>', 'helper.conf the wrapper uses (default: /etc/xbzrle/helper.conf)')
    .option('--write-drop-in', 'write the systemd drop-in for libvirtd (path-dir; default: print it)')
    .option(
      '--drop-in <file>',
      'drop-in path (default ROOT/etc/systemd/system/libvirtd.service.d/xbzrle-helper.conf)',
    )
    .addOption(
      new Option('--set-format <format>', 'also set the image format in qemu.conf (with a backup)').choices([
        ...LIBVIRT_FORMATS,
      ]),
    )
    .option(
      '--format-keys <list>',
      `qemu.conf keys --set-format sets (${FORMAT_KEYS.join(', ')})`,
      list(FORMAT_KEYS),
    )
    .option('--dpkg-divert <path>', 'dpkg-divert to run (default: dpkg-divert on PATH)')
    .option('--force', 'install even if images saved with the real program would no longer restore')
    .action((o) => {
      install({
        root: o.root,
        qemuConf: o.qemuConf,
        manifest: o.manifest,
        saveDir: o.saveDir,
        pids: o.pid,
        method: o.method,
        pathDir: o.pathDir,
        programs: o.programs as HelperProgram[],
        exec: o.exec,
        config: o.config,
        writeDropIn: o.writeDropIn,
        dropIn: o.dropIn,
        setFormat: o.setFormat,
        formatKeys: o.formatKeys as FormatKey[] | undefined,
        dpkgDivert: o.dpkgDivert,
        force: o.force,
      })
    })

  addCommon(lv.command('uninstall'))
    .description('undo exactly what install did (wrappers, diversion, drop-in, qemu.conf lines)')
    .option('--image <file...>', 'more helper images to check (managed-save images are always checked)')
    .option(
      '--convert-images',
      'rewrite the images the helper wrote as raw images, so they restore without it',
    )
    .option('--force', 'uninstall even though helper images would no longer restore')
    .option('--dpkg-divert <path>', 'dpkg-divert to run (default: dpkg-divert on PATH)')
    .action(async (o) => {
      await uninstall({
        root: o.root,
        qemuConf: o.qemuConf,
        manifest: o.manifest,
        saveDir: o.saveDir,
        pids: o.pid,
        images: o.image,
        convertImages: o.convertImages,
        force: o.force,
        dpkgDivert: o.dpkgDivert,
      })
    })

  addCommon(lv.command('status'))
    .description('which lzop/zstd each running libvirtd runs, and which images restore')
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const s = await status({
        root: o.root,
        qemuConf: o.qemuConf,
        manifest: o.manifest,
        saveDir: o.saveDir,
        pids: o.pid,
      })
      process.stdout.write(o.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s))
    })

  lv.command('check')
    .description('say what a libvirt save image holds (lzop/zstd header, xbzrle or real payload)')
    .argument('<image...>', 'save images')
    .action(async (images: string[]) => {
      for (const f of images) {
        const i = await readLibvirtImage(f)
        process.stdout.write(`${i ? describeLibvirtImage(i, f) : `${f}: not a libvirt save image`}\n`)
      }
    })

  lv.command('convert')
    .description('rewrite an image the helper wrote (header lzop/zstd, xbzrle payload) as a raw save image')
    .argument('<image>', 'helper image')
    .requiredOption('-o, --output <file>', 'raw image to write (may be the input: replaced in place)')
    .action(async (image: string, o) => {
      const i = await readLibvirtImage(image)
      if (!i) throw new CliError(`${image}: not a libvirt save image`, ExitCode.BAD_INPUT)
      const r = await convertHelperImage(image, o.output)
      process.stderr.write(
        `${o.output}: raw libvirt save image, ${r.bytesOut} bytes; virsh restore ${o.output}\n`,
      )
    })
}
