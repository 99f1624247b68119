// Writes the golden vectors of every format version: vectors/v1/, vectors/v2/, vectors/v3/ (or, given a
// directory, DIR/v1/ … to compare a regeneration with the committed files: `diff -r DIR vectors`). Vectors are
// FROZEN once committed: this never overwrites an existing file (it skips any vector whose files exist). To add a
// vector, add it to scripts/vectors-vN.ts and rerun. Helpers shared by the definitions: scripts/vector-kit.ts.
//
// NAME.xbz  the xbzrle stream
// NAME.orig the original bytes it decodes to (valid vectors only), built from plain inputs, not by decoding
// NAME.json description; for malformed vectors the exact expected error code and message
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeVectorFiles } from './vector-files.js'
import type { Vector } from './vector-kit.js'
import { v1Vectors } from './vectors-v1.js'
import { v2Vectors } from './vectors-v2.js'
import { v3Vectors } from './vectors-v3.js'

const VERSIONS: readonly [version: number, vectors: () => Vector[]][] = [
  [1, v1Vectors],
  [2, v2Vectors],
  [3, v3Vectors],
]

const root = process.argv[2]
  ? resolve(process.argv[2])
  : join(dirname(fileURLToPath(import.meta.url)), '..', 'vectors')
for (const [version, vectors] of VERSIONS) {
  const out = join(root, `v${version}`)
  console.log(`${writeVectorFiles(out, version, vectors())} vector(s) written to ${out}`)
}
