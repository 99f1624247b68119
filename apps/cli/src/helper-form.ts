// The lzop-style argument forms, parsed without loading the rest of the CLI (bin/xbzrle.js checks them first).

/**
 * libvirt runs compression helpers as `PROG -c` and `PROG -dc [--ignore-warn]` (lzop style). Those forms map to
 * encode/decode; flags libvirt or lzop users add (-q, -1..-9, --ignore-warn, -f) are accepted and ignored.
 */
export function helperForm(argv: string[]): string[] | undefined {
  const first = argv[0]
  if (first === undefined || !/^-[a-zA-Z0-9]+$/.test(first) || first === '-h' || first === '-V')
    return undefined
  const letters = new Set<string>()
  const files: string[] = []
  const output: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (/^-[a-zA-Z0-9]+$/.test(a)) {
      for (const ch of a.slice(1)) letters.add(ch)
      // lzop's `-o FILE` (also at the end of a group, `-co FILE`): the output file, not an input.
      if (a.endsWith('o') && i + 1 < argv.length) output.push('-o', argv[++i]!)
    } else if (a === '--strict') output.push(a)
    else if (a.startsWith('--')) continue
    else files.push(a)
  }
  if (letters.has('d')) return ['decode', ...files, ...output.filter((x) => x !== '--strict')]
  if (letters.has('c')) return ['encode', ...files, ...output]
  return undefined
}

/**
 * The invocations bin/xbzrle.js runs from the small fast bundle (fast.ts) instead of the whole CLI, because each
 * one is started by QEMU or libvirt once per migration, save or restore, with its first byte on their critical
 * path:
 * - `encode` / `decode`: `xbzrle -c` / `xbzrle -dc` reading stdin and writing stdout with nothing else asked (no
 *   files, no -o, --strict or --debug, no progress bar to draw), what QEMU's `exec:` and libvirt run, and
 *   `xbzrle encode` / `xbzrle decode` without any option or file (the same commands in the README's words);
 * - `helper`: `xbzrle --libvirt-helper=NAME ...`, what the installed lzop/zstd wrapper runs.
 * Anything else (undefined) goes through the whole CLI and its option parser.
 */
export function fastForm(argv: string[], stderrIsTTY: boolean): 'encode' | 'decode' | 'helper' | undefined {
  const first = argv[0]
  if (first === '--libvirt-helper' || first?.startsWith('--libvirt-helper=')) return 'helper'
  if (stderrIsTTY || argv.includes('--debug')) return undefined
  // `xbzrle encode` / `xbzrle decode` with nothing else: the very same filters (the README's exec: commands)
  if (argv.length === 1 && (first === 'encode' || first === 'decode')) return first
  const form = helperForm(argv)
  if (form?.length !== 1) return undefined
  return form[0] === 'encode' ? 'encode' : form[0] === 'decode' ? 'decode' : undefined
}
