// The README's Quick start is a promise: exactly two command lines, and CI runs the second one verbatim.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../..', import.meta.url))

it('Quick start has exactly two command lines; .ci/run runs the test line; the demo script exists', () => {
  const readme = readFileSync(`${root}/README.md`, 'utf8')
  const section = /## Quick start\n\n```sh\n([\s\S]*?)```/.exec(readme)
  expect(section).not.toBeNull()
  const lines = section![1]!.trim().split('\n')
  expect(lines).toEqual(['npm ci && npm run demo', 'bash scripts/install-deps.sh && npm ci && npm test'])
  const ci = readFileSync(`${root}/.ci/run`, 'utf8')
  expect(ci).toContain(`grep -m1 -E '^${lines[1]}'`)
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'))
  expect(pkg.scripts.demo).toMatch(/xbzrle\.js demo/)
  expect(pkg.scripts.test).toMatch(/--outputFile\.json=\.vitest-report\.json/)
})
