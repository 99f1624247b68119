import { createRequire } from 'node:module'
import type cliProgressTypes from 'cli-progress'
import { onInterrupt } from './atomic-output.js'
import { formatBytes } from './io.js'

export interface ProgressSample {
  bytesIn: number
  bytesOut: number
  /** Cache hit rate in [0, 1], if known. */
  hitRate?: number
}

/**
 * A live progress line on stderr, only when stderr is a terminal (libvirt captures stderr as its log, and
 * stdout is data). Uses cli-progress, which also renders nothing on a non-TTY stream.
 */
export class Progress {
  private readonly bar: cliProgressTypes.SingleBar | undefined
  private readonly started = Date.now()
  private timer: NodeJS.Timeout | undefined
  private unregister: (() => void) | undefined

  constructor(
    label: string,
    private readonly sample: () => ProgressSample,
    enabled = process.stderr.isTTY === true,
  ) {
    if (!enabled) return
    // Loaded only when a bar is shown: every `xbzrle -c` would pay for it at start-up otherwise.
    const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof cliProgressTypes
    this.bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `${label} {text}`,
        hideCursor: true,
        clearOnComplete: false,
        fps: 5,
      },
      cliProgress.Presets.legacy,
    )
    this.bar.start(1, 0, { text: this.text() })
    this.timer = setInterval(() => this.bar?.update(0, { text: this.text() }), 250)
    this.timer.unref()
    // Interrupted: the bar ends its line first, so that the one-line message starts on a line of its own.
    this.unregister = onInterrupt(() => this.stop())
  }

  private text(): string {
    const s = this.sample()
    const secs = (Date.now() - this.started) / 1000
    const ratio = s.bytesIn > 0 ? (s.bytesOut / s.bytesIn).toFixed(3) : '-'
    const mbps = secs > 0 ? (s.bytesIn / 1e6 / secs).toFixed(0) : '0'
    const hit = s.hitRate === undefined ? '' : ` | hit ${(s.hitRate * 100).toFixed(1)}%`
    return `in ${formatBytes(s.bytesIn)} | out ${formatBytes(s.bytesOut)} | ratio ${ratio} | ${mbps} MB/s${hit} | ${secs.toFixed(1)}s`
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.unregister?.()
    this.unregister = undefined
    if (this.bar?.isActive) {
      this.bar.update(0, { text: this.text() })
      this.bar.stop()
    }
  }
}
