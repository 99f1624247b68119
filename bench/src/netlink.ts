/**
 * The live bench's link: a veth pair into a network namespace the bench creates, with a token bucket (`tc tbf`)
 * on the host side. Bytes cross real kernel sockets (TCP over the veth, the kernel's own socket buffers) like a
 * network link, instead of a `pv -L` pipe with its own buffer. The source pipeline ends in `socat - TCP:PEER`,
 * the destination's begins with `ip netns exec NS socat TCP-LISTEN`. Needs root, `ip`, `tc` and `socat`.
 */
import { execFileSync } from 'node:child_process'
import { MiB } from './util.js'

const run = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString()

/** The rate in MiB/s that stands for 1 Gbit/s in `--links` (125 000 000 bytes/s). */
export const GBIT_MIBS = 125e6 / MiB

export class NetLink {
  readonly ns: string
  readonly host: string
  readonly peerAddr = '10.213.7.2'
  private port = 20_000 + (process.pid % 20_000)

  constructor() {
    const id = process.pid % 100_000
    this.ns = `xbzlink${id}`
    this.host = `xbzh${id}`
    const peer = `xbzp${id}`
    this.close()
    run('ip', ['netns', 'add', this.ns])
    run('ip', ['link', 'add', this.host, 'type', 'veth', 'peer', 'name', peer])
    run('ip', ['link', 'set', peer, 'netns', this.ns])
    run('ip', ['addr', 'add', '10.213.7.1/30', 'dev', this.host])
    run('ip', ['link', 'set', this.host, 'up'])
    run('ip', ['netns', 'exec', this.ns, 'ip', 'addr', 'add', `${this.peerAddr}/30`, 'dev', peer])
    run('ip', ['netns', 'exec', this.ns, 'ip', 'link', 'set', peer, 'up'])
    run('ip', ['netns', 'exec', this.ns, 'ip', 'link', 'set', 'lo', 'up'])
  }

  /**
   * Sets the link rate (MiB/s; 0 = no limit: a plain FIFO that only counts). The bucket holds 1/100 s of the rate
   * (at least 128 KiB, so a GSO packet always fits); packets wait at most 50 ms in its queue.
   */
  setRate(mibs: number): void {
    if (mibs > 0) {
      const bytes = Math.round(mibs * MiB)
      const burst = Math.max(128 * 1024, Math.round(bytes / 100))
      run('tc', [
        'qdisc',
        'replace',
        'dev',
        this.host,
        'root',
        'tbf',
        'rate',
        `${bytes}bps`,
        'burst',
        `${burst}b`,
        'latency',
        '50ms',
      ])
    } else run('tc', ['qdisc', 'replace', 'dev', this.host, 'root', 'pfifo', 'limit', '10000'])
  }

  /** Bytes the qdisc has sent so far (IP packets: payload + TCP/IP headers). */
  sentBytes(): number {
    const m = /Sent (\d+) bytes/.exec(run('tc', ['-s', 'qdisc', 'show', 'dev', this.host]))
    return m ? Number(m[1]) : Number.NaN
  }

  /** A fresh port and the two ends of the link for one migration. */
  next(): { send: string; receive: string } {
    const port = this.port++
    return {
      send: `socat -u - TCP:${this.peerAddr}:${port},retry=200,interval=0.02`,
      receive: `ip netns exec ${this.ns} socat -u TCP-LISTEN:${port},reuseaddr,bind=${this.peerAddr} -`,
    }
  }

  close(): void {
    try {
      run('ip', ['link', 'del', this.host])
    } catch {}
    try {
      run('ip', ['netns', 'del', this.ns])
    } catch {}
  }
}
