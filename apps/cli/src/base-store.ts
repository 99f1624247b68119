/**
 * The libvirt save flow of issue #15: a directory that keeps, for every domain (the UUID in its save image's XML),
 * the chain of its xbzrle saves, newest first, so that each new save is encoded against the previous one and a
 * save can be decoded from the directory alone.
 *
 * `DIR/<uuid>.chain`, one line per save: `sha256:<hex of the save's raw bytes> <length> <absolute path of its
 * xbzrle file>`. A save's stream names its base by that fingerprint, so decoding looks the chain up by it; a link
 * whose file was deleted or replaced breaks every later save, which is then refused (the base is verified).
 * A chain is at most `maxChain` long (decoding one needs a cache per link): the save after that starts a new
 * chain, standalone.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { readSaveImageXml } from '@xbzrle/adapter-libvirt'
import { CliError, ExitCode } from './errors.js'

export interface ChainEntry {
  fingerprint: string
  bytes: number
  path: string
}

export const DEFAULT_MAX_CHAIN = 4
const LINE = /^(sha256:[0-9a-f]{64}) (\d+) (.+)$/
const UUID = /<uuid>\s*([0-9a-fA-F-]{32,36})\s*<\/uuid>/

/** The domain UUID of a libvirt save image (from its XML). */
export async function domainUuidOf(image: string): Promise<string> {
  let xml: string
  try {
    xml = await readSaveImageXml(image)
  } catch (e) {
    throw new CliError(
      `--base-store: ${image} is not a libvirt save image (${(e as Error).message})`,
      ExitCode.BAD_INPUT,
    )
  }
  const m = UUID.exec(xml)
  if (!m) throw new CliError(`--base-store: the domain XML of ${image} has no <uuid>`, ExitCode.BAD_INPUT)
  return m[1]!.toLowerCase()
}

function chainFile(dir: string, uuid: string): string {
  return join(dir, `${uuid}.chain`)
}

export function readChain(dir: string, uuid: string): ChainEntry[] {
  const file = chainFile(dir, uuid)
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const m = LINE.exec(l)
      if (!m)
        throw new CliError(`--base-store: ${file}: unreadable line ${JSON.stringify(l)}`, ExitCode.BAD_INPUT)
      return { fingerprint: m[1]!, bytes: Number(m[2]), path: m[3]! }
    })
}

/** Replaces the chain file atomically (a crash leaves the old chain). */
export function writeChain(dir: string, uuid: string, entries: ChainEntry[]): void {
  const file = chainFile(dir, uuid)
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`
  writeFileSync(tmp, entries.map((e) => `${e.fingerprint} ${e.bytes} ${e.path}\n`).join(''))
  renameSync(tmp, file)
}

/**
 * The bases of a new save: the chain's files, newest first; none when the chain is empty, full or broken (its
 * newest file is gone), with a line saying why a chain is restarted.
 */
export function basesForNewSave(entries: ChainEntry[], maxChain: number, say: (s: string) => void): string[] {
  if (entries.length === 0) return []
  if (entries.length >= maxChain) {
    say(
      `the chain holds ${entries.length} saves (--max-chain ${maxChain}): this save starts a new one, standalone`,
    )
    return []
  }
  const missing = entries.find((e) => !existsSync(e.path))
  if (missing) {
    say(`${missing.path} of the chain is gone: this save starts a new chain, standalone`)
    return []
  }
  return entries.map((e) => e.path)
}

/** The bases of a stream whose header needs `fingerprint`: that save and the ones before it, from any chain. */
export function basesFor(dir: string, fingerprint: string): string[] | undefined {
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.chain'))) {
    const entries = readChain(dir, f.slice(0, -'.chain'.length))
    const at = entries.findIndex((e) => e.fingerprint === fingerprint)
    if (at >= 0) return entries.slice(at).map((e) => e.path)
  }
  return undefined
}
