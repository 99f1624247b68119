/** The test guest's serial protocol: `pass N checksum XXXXXXXX [memsum XXXXXXXX]` lines (see README.md). */
import { readFile } from 'node:fs/promises'
import { type WaitForOptions, waitFor } from './wait.js'

export interface PassLine {
  pass: number
  checksum: string
  memsum?: string
}

/** Parse `pass N checksum XXXXXXXX [memsum XXXXXXXX]` lines (complete lines only). */
export function parsePassLines(serial: string): PassLine[] {
  const out: PassLine[] = []
  const re = /^pass (\d+) checksum ([0-9a-f]{8})(?: memsum ([0-9a-f]{8}))?\r?\n/gm
  for (let m = re.exec(serial); m; m = re.exec(serial)) {
    const line: PassLine = { pass: Number(m[1]), checksum: m[2]! }
    if (m[3]) line.memsum = m[3]
    out.push(line)
  }
  return out
}

/** Highest pass number in a serial log file (0 if none yet or no file): for guests this harness did not start. */
export async function lastPassInFile(serialFile: string): Promise<number> {
  const passes = parsePassLines(await readFile(serialFile, 'utf8').catch(() => ''))
  return passes.at(-1)?.pass ?? 0
}

/**
 * Wait until the serial log file shows a pass ≥ n (a guest started by libvirt, say, whose `<serial type='file'>`
 * is `serialFile`). Default timeout 30 s; the error carries the log's tail.
 */
export async function waitForPassInFile(
  serialFile: string,
  n: number,
  options: WaitForOptions = {},
): Promise<number> {
  return waitFor(
    async () => {
      const last = await lastPassInFile(serialFile)
      return last >= n ? last : 0
    },
    async () =>
      `pass ${n} in ${serialFile}; serial tail:\n${(await readFile(serialFile, 'utf8').catch(() => '')).slice(-1000)}`,
    { timeoutMs: 30_000, intervalMs: 100, ...options },
  )
}
