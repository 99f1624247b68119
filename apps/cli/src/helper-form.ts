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
 * `xbzrle -c` reading stdin and writing stdout with nothing else asked (no files, no -o, --strict or --debug, no
 * progress bar to draw): the form QEMU's `exec:` and libvirt run. bin/xbzrle.js then loads only the encoder
 * (fast-encode.ts), so the first output byte does not wait for the whole CLI and its option parser to load.
 */
export function isFastEncode(argv: string[], stderrIsTTY: boolean): boolean {
  const form = helperForm(argv)
  return !stderrIsTTY && form?.length === 1 && form[0] === 'encode' && !argv.includes('--debug')
}
