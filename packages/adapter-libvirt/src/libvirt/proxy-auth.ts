/**
 * Token and handshake of the proxy pair's transport (issue #19 item 9). Layout (all versions start with the
 * same 10 bytes, so a peer can always say what it got):
 *
 * ```
 * destination → source  HELLO   "XBZPROXY" | u8 version=1 | u8 flags (bit 0: token required, bit 1: base-aware) | 32-byte nonce
 * source → destination  AUTH    "XBZPROXY" | u8 version=1 | u8 flags (bit 0: proof present, bit 1: BASE follows)  | 32-byte proof
 *                       [BASE]  (only with AUTH bit 1) the source's base section
 * destination → source  ANSWER  u8 status | u8 length | UTF-8 reason (length bytes; empty when accepted)
 *                       [BASE]  (only when accepted and AUTH had bit 1) the destination's base section
 * BASE section (41 bytes): u8 held (0 none, 1 a base) | 32-byte SHA-256 of the base's original bytes | u64 BE length
 * ```
 *
 * Base images (issue #15) ride on flag bit 1, inside version 1: a destination of this release sets it in HELLO
 * (an older source ignores it and sends no BASE section, an older destination never sets it, so this source
 * sends none), and the destination answers with its own BASE section only to a source that sent one. Each side
 * then knows whether the other holds the same base (agreeOnBase); the fingerprints are not part of the proof:
 * the destination verifies the base named in the stream header before a byte reaches QEMU anyway.
 *
 * proof = HMAC-SHA256(key = token, "xbzrle-proxy v1" | nonce): the token never crosses the wire and a recorded
 * proof is worthless for another connection (fresh nonce). The destination compares with timingSafeEqual over
 * SHA-256 digests. Status 0 = accepted (the xbzrle stream follows), 1 = authentication failed, 2 = busy (a
 * migration is already running), 3 = unsupported version, 4 = malformed. Nothing else is read or written before
 * the answer; the stream and the return path start right after it.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { Duplex } from 'node:stream'

export const PROXY_HANDSHAKE_MAGIC = Buffer.from('XBZPROXY', 'latin1')
export const PROXY_HANDSHAKE_VERSION = 1
const NONCE = 32
const HELLO_BYTES = PROXY_HANDSHAKE_MAGIC.length + 2 + NONCE
const PROOF_CONTEXT = Buffer.from('xbzrle-proxy v1', 'latin1')
/** HELLO: a token is required; AUTH: the proof is present. */
const FLAG_TOKEN = 1
/** HELLO: the destination reads a BASE section; AUTH: one follows (and the answer carries one back). */
const FLAG_BASE = 2
const BASE_SECTION = 1 + 32 + 8

/** A base image as named in the handshake: `sha256:HEX` of its original bytes and their number. */
export interface ProxyBaseOffer {
  fingerprint: string
  bytes: number
}

/** What the handshake told about the peer's base: whether it speaks of bases at all, and the one it holds. */
export interface PeerBase {
  aware: boolean
  base?: ProxyBaseOffer
}

function baseSection(b: ProxyBaseOffer | undefined): Buffer {
  const out = Buffer.alloc(BASE_SECTION)
  if (!b) return out
  out[0] = 1
  Buffer.from(b.fingerprint.slice('sha256:'.length), 'hex').copy(out, 1)
  out.writeBigUInt64BE(BigInt(b.bytes), 33)
  return out
}

/** Reads a BASE section; undefined for "none"; throws on a held flag other than 0/1. */
function parseBaseSection(b: Buffer): ProxyBaseOffer | undefined {
  if (b[0] === 0) return undefined
  if (b[0] !== 1) throw new Error(`malformed base section in the proxy handshake (held = ${b[0]})`)
  const bytes = b.readBigUInt64BE(33)
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER))
    throw new Error('malformed base section in the proxy handshake (length)')
  return { fingerprint: `sha256:${b.subarray(1, 33).toString('hex')}`, bytes: Number(bytes) }
}

function checkOffer(b: ProxyBaseOffer | undefined): void {
  if (b && (!/^sha256:[0-9a-f]{64}$/.test(b.fingerprint) || !Number.isSafeInteger(b.bytes) || b.bytes < 0))
    throw new Error(`not a base fingerprint: ${JSON.stringify(b)}`)
}

/**
 * Whether this side uses its base for the migration: only when both sides hold the same one. `line` says what
 * was decided (undefined when neither side has a base); a fallback line ends in "migrating without a base".
 */
export function agreeOnBase(
  role: 'source' | 'destination',
  ours: ProxyBaseOffer | undefined,
  peer: PeerBase,
): { use: boolean; line?: string } {
  const other = role === 'source' ? 'destination' : 'source'
  const theirs = peer.base
  const without = ': migrating without a base'
  if (!ours && !theirs) return { use: false }
  if (ours && theirs && ours.fingerprint === theirs.fingerprint && ours.bytes === theirs.bytes)
    return {
      use: true,
      line: `both halves hold base ${ours.fingerprint}: ${role === 'source' ? 'encoding' : 'decoding'} against it`,
    }
  let why: string
  if (!ours) why = `the ${other} holds base ${theirs!.fingerprint}, this ${role} none (--base)`
  else if (!peer.aware) why = `the ${other} predates base images (no base in its handshake)`
  else if (!theirs) why = `the ${other} holds no base image (ours is ${ours.fingerprint})`
  else why = `the ${other} holds base ${theirs.fingerprint}, not ours (${ours.fingerprint})`
  return { use: false, line: `${why}${without}` }
}

export enum HandshakeStatus {
  Accepted = 0,
  AuthFailed = 1,
  Busy = 2,
  UnsupportedVersion = 3,
  Malformed = 4,
}

/** The environment variable the CLI reads the token from (when no --token-file is given). */
export const TOKEN_ENV = 'XBZRLE_TOKEN'

/**
 * The shared secret from a file (trimmed; the file wins) or an environment variable, never from argv. Undefined
 * when neither holds one was asked for; throws a one-line error when the file is unreadable or empty.
 */
export function loadProxyToken(
  o: { file?: string; env?: string; environment?: NodeJS.ProcessEnv } = {},
): string | undefined {
  if (o.file !== undefined) {
    let text: string
    try {
      text = readFileSync(o.file, 'utf8')
    } catch (e) {
      throw new Error(`cannot read token file ${o.file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
    }
    const t = text.trim()
    if (t === '') throw new Error(`token file ${o.file} is empty`)
    return t
  }
  if (o.env !== undefined) {
    const t = (o.environment ?? process.env)[o.env]?.trim()
    return t ? t : undefined
  }
  return undefined
}

/** True for 127.0.0.0/8, ::1, ::ffff:127.x and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '')
  if (h === 'localhost' || h === '::1') return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.')
  return false
}

function proof(token: string, nonce: Buffer): Buffer {
  return createHmac('sha256', token).update(PROOF_CONTEXT).update(nonce).digest()
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest()

/** Reads exactly n bytes from a paused Duplex; extra bytes are put back. Rejects on EOF, close or error. */
export function readExactly(s: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let have = 0
    const cleanup = () => {
      s.off('readable', onReadable)
      s.off('end', onEnd)
      s.off('close', onEnd)
      s.off('error', onError)
    }
    const onReadable = () => {
      while (have < n) {
        const c = s.read() as Buffer | null
        if (c === null) break
        parts.push(c)
        have += c.length
      }
      if (have < n) return
      cleanup()
      const all = Buffer.concat(parts)
      if (all.length > n) s.unshift(all.subarray(n))
      resolve(all.subarray(0, n))
    }
    const onEnd = () => {
      cleanup()
      reject(new Error(`the peer closed the connection during the proxy handshake (${have} of ${n} bytes)`))
    }
    const onError = (e: Error) => {
      cleanup()
      reject(e)
    }
    s.on('readable', onReadable)
    s.once('end', onEnd)
    s.once('close', onEnd)
    s.once('error', onError)
  })
}

function frame(flags: number, body: Buffer): Buffer {
  return Buffer.concat([PROXY_HANDSHAKE_MAGIC, Buffer.from([PROXY_HANDSHAKE_VERSION, flags]), body])
}

export class HandshakeRefused extends Error {
  override readonly name = 'HandshakeRefused'
  constructor(
    readonly status: HandshakeStatus,
    message: string,
  ) {
    super(message)
  }
}

function answer(status: HandshakeStatus, reason: string): Buffer {
  const r = Buffer.from(reason, 'utf8').subarray(0, 255)
  return Buffer.concat([Buffer.from([status, r.length]), r])
}

/**
 * Destination side, up to the decision: sends HELLO, reads AUTH and checks the proof. Resolves with `accept` /
 * `refuse` (the caller decides busy-or-not after authentication, then answers); rejects when the peer closes or
 * speaks something else (the caller destroys the connection). Refusals for a bad token are answered here.
 */
export async function serverHandshake(
  s: Duplex,
  token: string | undefined,
  base?: ProxyBaseOffer,
): Promise<{
  accept: () => void
  refuse: (status: HandshakeStatus, reason: string) => void
  /** The source's base, as it said (aware = false: a source from before base images). */
  peer: PeerBase
}> {
  checkOffer(base)
  const nonce = randomBytes(NONCE)
  s.write(frame((token ? FLAG_TOKEN : 0) | FLAG_BASE, nonce))
  const auth = await readExactly(s, HELLO_BYTES)
  const refuse = (status: HandshakeStatus, reason: string) => {
    s.end(answer(status, reason))
    // Give the answer a moment to leave, then make sure the socket goes.
    setTimeout(() => s.destroy(), 1000).unref()
  }
  if (!auth.subarray(0, PROXY_HANDSHAKE_MAGIC.length).equals(PROXY_HANDSHAKE_MAGIC)) {
    s.destroy()
    throw new HandshakeRefused(HandshakeStatus.Malformed, 'the peer is not an xbzrle proxy source')
  }
  const version = auth[PROXY_HANDSHAKE_MAGIC.length]!
  if (version !== PROXY_HANDSHAKE_VERSION) {
    const why = `unsupported proxy handshake version ${version} (this destination speaks ${PROXY_HANDSHAKE_VERSION})`
    refuse(HandshakeStatus.UnsupportedVersion, why)
    throw new HandshakeRefused(HandshakeStatus.UnsupportedVersion, why)
  }
  const flags = auth[PROXY_HANDSHAKE_MAGIC.length + 1]!
  const aware = (flags & FLAG_BASE) !== 0
  let peer: PeerBase = { aware }
  if (aware) {
    try {
      const theirs = parseBaseSection(await readExactly(s, BASE_SECTION))
      peer = theirs ? { aware, base: theirs } : peer
    } catch (e) {
      if (e instanceof Error && e.message.startsWith('malformed')) {
        refuse(HandshakeStatus.Malformed, e.message)
        throw new HandshakeRefused(HandshakeStatus.Malformed, e.message)
      }
      throw e
    }
  }
  if (token) {
    const given = auth.subarray(PROXY_HANDSHAKE_MAGIC.length + 2)
    const ok = (flags & FLAG_TOKEN) !== 0 && timingSafeEqual(sha(proof(token, nonce)), sha(given))
    if (!ok) {
      const why =
        (flags & FLAG_TOKEN) === 0
          ? 'this destination requires a token (--token-file FILE or XBZRLE_TOKEN on the source)'
          : 'wrong token'
      refuse(HandshakeStatus.AuthFailed, why)
      throw new HandshakeRefused(HandshakeStatus.AuthFailed, why)
    }
  }
  const accepted = aware
    ? Buffer.concat([answer(HandshakeStatus.Accepted, ''), baseSection(base)])
    : answer(HandshakeStatus.Accepted, '')
  return { accept: () => s.write(accepted), refuse, peer }
}

/**
 * Source side: reads HELLO, sends AUTH (with our BASE section when the destination reads one), waits for the
 * answer. Rejects (one-line message) unless accepted; resolves with what the destination said of its base.
 */
export async function clientHandshake(
  s: Duplex,
  token: string | undefined,
  base?: ProxyBaseOffer,
): Promise<PeerBase> {
  checkOffer(base)
  const hello = await readExactly(s, HELLO_BYTES)
  if (!hello.subarray(0, PROXY_HANDSHAKE_MAGIC.length).equals(PROXY_HANDSHAKE_MAGIC)) {
    throw new Error('the peer is not an xbzrle proxy destination (or one from before the handshake)')
  }
  const version = hello[PROXY_HANDSHAKE_MAGIC.length]!
  if (version !== PROXY_HANDSHAKE_VERSION) {
    throw new Error(
      `the destination speaks proxy handshake version ${version}, this source ${PROXY_HANDSHAKE_VERSION}: use the same xbzrle version on both hosts`,
    )
  }
  const flags = hello[PROXY_HANDSHAKE_MAGIC.length + 1]!
  const nonce = hello.subarray(PROXY_HANDSHAKE_MAGIC.length + 2)
  if (flags & FLAG_TOKEN && !token) {
    throw new Error('the destination requires a token: give --token-file FILE or set XBZRLE_TOKEN')
  }
  const aware = (flags & FLAG_BASE) !== 0
  const auth = frame(
    (token ? FLAG_TOKEN : 0) | (aware ? FLAG_BASE : 0),
    token ? proof(token, nonce) : Buffer.alloc(NONCE),
  )
  s.write(aware ? Buffer.concat([auth, baseSection(base)]) : auth)
  const head = await readExactly(s, 2)
  const reason = head[1]! > 0 ? (await readExactly(s, head[1]!)).toString('utf8') : ''
  const status = head[0]! as HandshakeStatus
  if (status !== HandshakeStatus.Accepted) {
    throw new HandshakeRefused(
      status,
      `the destination refused the connection: ${reason || `status ${status}`}`,
    )
  }
  if (!aware) return { aware }
  const theirs = parseBaseSection(await readExactly(s, BASE_SECTION))
  return theirs ? { aware, base: theirs } : { aware }
}
