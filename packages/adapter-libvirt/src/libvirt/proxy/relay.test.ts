// The relay of one migration as a state machine, between real unix sockets (no QEMU): either direction may be
// delivered first, the second one closes the relay, and the return path's SHUT decides the verdict.
import { createHash } from 'node:crypto'
import type { Socket } from 'node:net'
import { Duplex, PassThrough } from 'node:stream'
import { installTestkitHooks, tmpDir, waitFor } from '@xbzrle/testkit'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { Relay, RelayState } from './relay.js'
import { zeroProxyCounters } from './sessions.js'
import { socketPair } from './test-peers.js'

installTestkitHooks({ afterEach, afterAll })

/** A relay between a fake source QEMU (`qemu`) and a fake transport peer (`peer`), with a pass-through filter. */
async function relay(o: { halfCloseTimeoutMs?: number; idleTimeoutMs?: number } = {}) {
  const dir = tmpDir('xbzrle-relay-')
  const [from, qemu] = await socketPair(dir, 'a.sock')
  const [to, peer] = await socketPair(dir, 'b.sock')
  const counters = zeroProxyCounters()
  const r = new Relay(
    1,
    { from, to, fromName: 'QEMU', toName: 'peer', filter: new PassThrough(), qemuIs: 'from' },
    counters,
    {
      idleTimeoutMs: o.idleTimeoutMs ?? 0,
      halfCloseTimeoutMs: o.halfCloseTimeoutMs ?? 0,
      digest: true,
    },
  )
  return { r, qemu, peer, counters }
}

const collect = (s: Socket) => {
  const parts: Buffer[] = []
  s.on('data', (b: Buffer) => parts.push(b))
  return () => Buffer.concat(parts)
}

const SHUT_OK = Buffer.from([0, 1, 0, 4, 0, 0, 0, 0])

describe('Relay', () => {
  it('forward delivered first: Relaying → ForwardDone → Closed, ok, counted and hashed', async () => {
    const { r, qemu, peer, counters } = await relay()
    const atPeer = collect(peer)
    const atQemu = collect(qemu)
    expect(r.state).toBe(RelayState.Relaying)
    const stream = Buffer.alloc(100_000, 7)
    qemu.end(stream)
    await waitFor(() => r.state === RelayState.ForwardDone, 'ForwardDone')
    peer.end(SHUT_OK)
    const res = await r.result
    expect(r.state).toBe(RelayState.Closed)
    expect(res).toMatchObject({
      id: 1,
      ok: true,
      forwardIn: stream.length,
      forwardOut: stream.length,
      returnPath: 8,
    })
    expect(res.qemuSha256).toBe(createHash('sha256').update(stream).digest('hex'))
    expect(counters).toMatchObject({ forwardIn: stream.length, forwardOut: stream.length, returnPath: 8 })
    expect(atPeer().equals(stream)).toBe(true)
    await waitFor(() => atQemu().length === SHUT_OK.length, 'the return path at QEMU')
    expect(atQemu().equals(SHUT_OK)).toBe(true)
  })

  it('return path delivered first: Relaying → ReturnDone → Closed, ok', async () => {
    const { r, qemu, peer } = await relay()
    peer.on('data', () => {})
    qemu.on('data', () => {})
    peer.end(SHUT_OK)
    await waitFor(() => r.state === RelayState.ReturnDone, 'ReturnDone')
    qemu.end(Buffer.from('stream'))
    expect(await r.result).toMatchObject({ ok: true, forwardIn: 6, returnPath: 8 })
    expect(r.state).toBe(RelayState.Closed)
  })

  it('a return path that ends without SHUT 0 fails the migration; so does a half-close timeout', async () => {
    const a = await relay()
    a.peer.on('data', () => {})
    a.qemu.on('data', () => {})
    a.peer.end(Buffer.from([0, 1, 0, 4, 0, 0, 0, 1])) // SHUT 1: the destination failed
    a.qemu.end(Buffer.from('stream'))
    expect(await a.r.result).toMatchObject({ ok: false, error: expect.stringMatching(/SHUT 1/) })

    const b = await relay({ halfCloseTimeoutMs: 200 })
    b.qemu.on('data', () => {})
    b.peer.end(SHUT_OK) // the peer is done; QEMU never ends its stream
    const res = await b.r.result
    expect(res.ok).toBe(false)
    expect(res.error).toMatch(/peer closed the return path but QEMU did not end its stream within 200 ms/)
    expect(b.r.state).toBe(RelayState.Closed)
  })

  it('fail() ends it once, as failed; so does an idle timeout', async () => {
    const a = await relay()
    a.r.fail('proxy closed')
    a.r.fail('again')
    expect(await a.r.result).toMatchObject({ ok: false, error: 'proxy closed' })
    expect(a.r.state).toBe(RelayState.Closed)

    const b = await relay({ idleTimeoutMs: 100 })
    expect(await b.r.result).toMatchObject({ ok: false, error: 'no data in either direction for 100 ms' })
  })

  describe('a peer that closes while forward bytes are on their way (EPIPE)', () => {
    const epipe = () => Object.assign(new Error('write EPIPE'), { code: 'EPIPE' })

    /** A destination relay whose `to` (QEMU) already sent EOF and holds every write until `release`. */
    async function destination(o: { failLastWrite: boolean; failFin: boolean }) {
      const dir = tmpDir('xbzrle-relay-')
      const [from, peer] = await socketPair(dir, 'a.sock')
      const held: { size: number; cb: (e?: Error | null) => void }[] = []
      const to = new Duplex({
        read() {},
        write(chunk: Buffer, _enc, cb) {
          held.push({ size: chunk.length, cb })
        },
        final(cb) {
          cb(o.failFin ? epipe() : null)
        },
      })
      to.push(null) // QEMU's side of the return path is over (no return path in this migration)
      const filter = new PassThrough()
      const r = new Relay(
        1,
        { from, to, fromName: 'peer', toName: 'QEMU', filter, qemuIs: 'to' },
        zeroProxyCounters(),
        { idleTimeoutMs: 0, halfCloseTimeoutMs: 0, digest: false },
      )
      peer.on('data', () => {})
      peer.end(Buffer.alloc(5000, 1))
      await waitFor(() => filter.readableEnded && held.length > 0, 'the filter handed everything over')
      // Complete the held writes in order (each completion lets the next buffered write through); the one that
      // carries the stream's last byte fails when asked to.
      let released = 0
      while (released < 5000) {
        await waitFor(() => held.length > 0, 'the next write')
        const w = held.shift()!
        released += w.size
        w.cb(o.failLastWrite && released === 5000 ? epipe() : null)
      }
      return r.result
    }

    it('the last write fails after the filter ended: failed, with the bytes QEMU took (was reported ok)', async () => {
      const res = await destination({ failLastWrite: true, failFin: false })
      expect(res.ok).toBe(false)
      expect(res.error).toMatch(
        /^QEMU closed the connection before it took the whole stream \(\d+ of 5000 bytes\)$/,
      )
    })

    it('every write completed and only our FIN meets EPIPE: delivered, ok', async () => {
      const res = await destination({ failLastWrite: false, failFin: true })
      expect(res).toMatchObject({ ok: true, forwardOut: 5000 })
    })
  })
})
