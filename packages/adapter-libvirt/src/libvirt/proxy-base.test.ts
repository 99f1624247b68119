// Base images in the proxy handshake (issue #15): the optional BASE sections behind flag bit 1, compatible with
// peers that predate them, and the decision each half takes from them.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { prepareEncoderBase } from '../base/base-image.js'
import { changedImage, saveLikeImage } from '../base/test-images.js'
import { fakeDestinationQemu, socketPair } from './proxy/test-peers.js'
import { startProxy, tcpConnector } from './proxy.js'
import {
  agreeOnBase,
  clientHandshake,
  HandshakeRefused,
  PROXY_HANDSHAKE_MAGIC,
  type ProxyBaseOffer,
  readExactly,
  serverHandshake,
} from './proxy-auth.js'

const dir = mkdtempSync(join(tmpdir(), 'xbz-proxy-base-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let n = 0
const pair = () => socketPair(dir, `s${n++}`)

const A: ProxyBaseOffer = { fingerprint: `sha256:${'a1'.repeat(32)}`, bytes: 268_435_456 + 4117 }
const B: ProxyBaseOffer = { fingerprint: `sha256:${'b2'.repeat(32)}`, bytes: 268_435_456 + 4117 }

/** Runs both halves of the handshake; what each learnt of the other's base. */
async function handshake(o: {
  src?: ProxyBaseOffer
  dst?: ProxyBaseOffer
  srcToken?: string
  dstToken?: string
}) {
  const [src, dst] = await pair()
  const server = serverHandshake(dst, o.dstToken, o.dst)
  const client = clientHandshake(src, o.srcToken, o.src)
  const hs = await server
  hs.accept()
  const srcPeer = await client
  // The stream follows the handshake untouched in both directions.
  src.write('STREAM')
  dst.write('RETURN')
  const [fwd, back] = await Promise.all([readExactly(dst, 6), readExactly(src, 6)])
  src.destroy()
  dst.destroy()
  return { dstPeer: hs.peer, srcPeer, fwd: fwd.toString(), back: back.toString() }
}

describe('agreeOnBase', () => {
  it('uses the base only when both halves hold the same one', () => {
    expect(agreeOnBase('source', A, { aware: true, base: { ...A } })).toEqual({
      use: true,
      line: `both halves hold base ${A.fingerprint}: encoding against it`,
    })
    expect(agreeOnBase('destination', A, { aware: true, base: A }).use).toBe(true)
    // same digest, other length: not the same base
    expect(agreeOnBase('source', A, { aware: true, base: { ...A, bytes: A.bytes - 1 } }).use).toBe(false)
  })

  it('falls back with one line naming both bases when they differ', () => {
    const r = agreeOnBase('source', A, { aware: true, base: B })
    expect(r.use).toBe(false)
    expect(r.line).toBe(
      `the destination holds base ${B.fingerprint}, not ours (${A.fingerprint}): migrating without a base`,
    )
  })

  it('falls back when one side holds no base, or predates base images; says nothing when neither has one', () => {
    expect(agreeOnBase('source', A, { aware: true })).toEqual({
      use: false,
      line: `the destination holds no base image (ours is ${A.fingerprint}): migrating without a base`,
    })
    expect(agreeOnBase('destination', undefined, { aware: true, base: A })).toEqual({
      use: false,
      line: `the source holds base ${A.fingerprint}, this destination none (--base): migrating without a base`,
    })
    expect(agreeOnBase('destination', A, { aware: false }).line).toBe(
      'the source predates base images (no base in its handshake): migrating without a base',
    )
    expect(agreeOnBase('source', undefined, { aware: false })).toEqual({ use: false })
    expect(agreeOnBase('source', undefined, { aware: true })).toEqual({ use: false })
  })
})

describe('base sections in the proxy handshake', () => {
  it('same base on both halves: each learns the other holds it, with and without a token', async () => {
    const r = await handshake({ src: A, dst: A })
    expect(r).toEqual({
      dstPeer: { aware: true, base: A },
      srcPeer: { aware: true, base: A },
      fwd: 'STREAM',
      back: 'RETURN',
    })
    const t = await handshake({ src: A, dst: A, srcToken: 'k', dstToken: 'k' })
    expect(t.srcPeer.base).toEqual(A)
    expect(t.dstPeer.base).toEqual(A)
    expect(agreeOnBase('source', A, t.srcPeer).use && agreeOnBase('destination', A, t.dstPeer).use).toBe(true)
  })

  it('different bases: both see the other one, neither uses its own', async () => {
    const r = await handshake({ src: A, dst: B })
    expect(r.srcPeer.base).toEqual(B)
    expect(r.dstPeer.base).toEqual(A)
    expect(agreeOnBase('source', A, r.srcPeer).use).toBe(false)
    expect(agreeOnBase('destination', B, r.dstPeer).use).toBe(false)
  })

  it('one side without a base: aware, none', async () => {
    const r = await handshake({ src: A })
    expect(r.srcPeer).toEqual({ aware: true })
    expect(r.dstPeer).toEqual({ aware: true, base: A })
    const s = await handshake({ dst: B })
    expect(s.srcPeer).toEqual({ aware: true, base: B })
    expect(s.dstPeer).toEqual({ aware: true })
    expect(s.fwd).toBe('STREAM')
  })

  it('a wrong token is still refused when a base section came along', async () => {
    const [src, dst] = await pair()
    const server = serverHandshake(dst, 'right', A)
    const client = clientHandshake(src, 'wrong', A)
    await expect(server).rejects.toBeInstanceOf(HandshakeRefused)
    await expect(client).rejects.toThrow('wrong token')
    src.destroy()
  })

  it('a source from before base images (no flag bit 1, no section) is accepted; the answer carries no section', async () => {
    const [src, dst] = await pair()
    const server = serverHandshake(dst, undefined, A)
    const hello = await readExactly(src, 42)
    expect(hello[9]! & 2).toBe(2) // base-aware, which an old source ignores (it reads bit 0 only)
    src.write(Buffer.concat([PROXY_HANDSHAKE_MAGIC, Buffer.from([1, 0]), Buffer.alloc(32)]))
    const hs = await server
    expect(hs.peer).toEqual({ aware: false })
    hs.accept()
    dst.write('QEMU')
    // exactly the old 2-byte answer, then the return path
    expect([...(await readExactly(src, 6))]).toEqual([0, 0, ...Buffer.from('QEMU')])
    src.destroy()
    dst.destroy()
  })

  it('a destination from before base images (flags without bit 1): the source sends the old AUTH only', async () => {
    const [src, dst] = await pair()
    const client = clientHandshake(src, undefined, A)
    dst.write(Buffer.concat([PROXY_HANDSHAKE_MAGIC, Buffer.from([1, 0]), Buffer.alloc(32, 7)]))
    const auth = await readExactly(dst, 42)
    expect(auth[9]).toBe(0)
    dst.write(Buffer.from([0, 0]))
    expect(await client).toEqual({ aware: false })
    src.write('STREAM')
    expect((await readExactly(dst, 6)).toString()).toBe('STREAM') // nothing else was sent before the stream
    src.destroy()
    dst.destroy()
  })

  it('a malformed base section is refused as malformed', async () => {
    const [src, dst] = await pair()
    const server = serverHandshake(dst, undefined, A)
    await readExactly(src, 42)
    const section = Buffer.alloc(41)
    section[0] = 9
    src.write(Buffer.concat([PROXY_HANDSHAKE_MAGIC, Buffer.from([1, 2]), Buffer.alloc(32), section]))
    await expect(server).rejects.toThrow('malformed base section')
    const answer = await readExactly(src, 2)
    expect(answer[0]).toBe(4)
    src.destroy()
  })
})

describe('startProxy with a base (fake QEMU on both ends)', () => {
  const A = join(dir, 'a.mig')
  const B = join(dir, 'b.mig')
  const baseA = saveLikeImage(1)
  writeFileSync(A, baseA)
  writeFileSync(B, saveLikeImage(2))
  const stream = changedImage(baseA, 0.05, 3)
  const offerOf = async (chain: string[]) => {
    const r = (await prepareEncoderBase(chain)).requirement
    return { fingerprint: `sha256:${Buffer.from(r.digest).toString('hex')}`, bytes: r.baseBytes }
  }

  /** One migration of `stream` from a fake source QEMU; the destination holds A, the source's base is given. */
  async function run(source: { offer: ProxyBaseOffer; chain: string[] } | undefined, migrations = 1) {
    const tag = `p${n++}`
    const qemu = await fakeDestinationQemu(join(dir, `${tag}-dst.sock`))
    const lines: string[] = []
    const dst = await startProxy({
      role: 'destination',
      listen: { host: '127.0.0.1', port: 0 },
      qemuSocket: join(dir, `${tag}-dst.sock`),
      base: { offer: await offerOf([A]), chain: [A] },
      log: (l) => lines.push(l),
    })
    const port = Number(dst.address.split(':').pop())
    const src = await startProxy({
      role: 'source',
      listen: join(dir, `${tag}-src.sock`),
      connect: tcpConnector({ host: '127.0.0.1', port }),
      log: (l) => lines.push(l),
      ...(source ? { base: { offer: source.offer, prepare: () => prepareEncoderBase(source.chain) } } : {}),
    })
    const results = []
    for (let i = 0; i < migrations; i++) {
      const c = connect({ path: join(dir, `${tag}-src.sock`), allowHalfOpen: true })
      c.on('data', () => {})
      c.on('error', () => {})
      c.end(stream)
      results.push(await Promise.all([src.nextSession(), dst.nextSession()]))
    }
    await Promise.all([src.close(), dst.close()])
    qemu.server.close()
    const [s, d] = results[0]!
    return { s, d, results, lines, received: Buffer.concat(qemu.received) }
  }

  it('same base: the source encodes against it, the destination QEMU gets the stream byte for byte', async () => {
    const based = await run({ offer: await offerOf([A]), chain: [A] })
    const plain = await run(undefined)
    expect(based.d.ok && plain.d.ok, `${based.d.error} ${plain.d.error}`).toBe(true)
    expect(based.received.equals(stream)).toBe(true)
    expect(plain.received.equals(stream)).toBe(true)
    expect(based.lines.filter((l) => /both halves hold base/.test(l))).toHaveLength(2)
    // the link: the based stream carries only the changed pages
    expect(based.s.forwardOut).toBeLessThan(0.5 * plain.s.forwardOut)
  })

  it('two migrations one after another through the same pair: each gets a freshly seeded base', async () => {
    const r = await run({ offer: await offerOf([A]), chain: [A] }, 2)
    const plain = await run(undefined)
    expect(r.results.map(([, d]) => d.ok)).toEqual([true, true])
    expect(r.received.equals(Buffer.concat([stream, stream]))).toBe(true)
    for (const [s] of r.results) expect(s.forwardOut).toBeLessThan(0.5 * plain.s.forwardOut)
  })

  it('different base: one line on each half, no base, still byte for byte', async () => {
    const r = await run({ offer: await offerOf([B]), chain: [B] })
    expect(r.d.ok, r.d.error).toBe(true)
    expect(r.received.equals(stream)).toBe(true)
    expect(r.lines.filter((l) => /migrating without a base/.test(l))).toHaveLength(2)
  })

  it('a source that names base A but encodes against B: refused before a byte reaches QEMU', async () => {
    const r = await run({ offer: await offerOf([A]), chain: [B] })
    expect(r.d.ok).toBe(false)
    expect(r.d.error).toMatch(/base image .*a\.mig is not this stream's base/)
    expect(r.received.length).toBe(0)
  })
})
