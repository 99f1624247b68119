/**
 * The command-line side of observability, shared by the commands: `--progress`, `--stats-json`,
 * `--metrics-listen` and friends, and the per-pass `--stats` table.
 */
import { writeFileSync } from 'node:fs'
import type { ProxySessionObserver } from '@xbzrle/adapter-libvirt'
import { onInterrupt } from '../atomic-output.js'
import { CliError, classify, ExitCode } from '../errors.js'
import { formatBytes } from '../io.js'
import type { MetricsEndpoint, MigrationMetrics, MigrationRole } from './metrics.js'
import {
  bytesSource,
  decoderSource,
  encoderSource,
  type LineSink,
  openLineSink,
  parseProgressMode,
  RunObserver,
} from './observer.js'

export { bytesSource, decoderSource, encoderSource }

import type { ObservedCommand, PassStatsJson } from './schemas.js'

export interface ObserveCommandOptions {
  /** `auto` (default), `bar`, `none`, `json`, `json=FD`, `json=FILE`. */
  progress?: string
  /** Interval of the `totals` progress lines, ms (default 1000). */
  progressInterval?: number
  /** Write the final per-pass statistics as JSON to this file, or `-` for stdout. */
  statsJson?: string
  /** Serve Prometheus metrics on HOST:PORT (loopback only unless metricsListenPublic). */
  metricsListen?: string
  metricsListenPublic?: boolean
  /** The `id` label (default: COMMAND-PID). */
  metricsId?: string
  /** After the end, keep serving until one more scrape, at most this long (ms, default 0). */
  metricsLinger?: number
}

export interface Observation {
  readonly observer: RunObserver
  /** Show the human progress bar (a terminal and no JSON progress on stderr). */
  readonly bar: boolean
  readonly metrics?: MigrationMetrics
  readonly endpoint?: MetricsEndpoint
  /** Runs the command, then ends the observation (end line, metrics, --stats-json, linger). */
  run(fn: () => Promise<void>): Promise<void>
}

function isStdout(output: string | undefined): boolean {
  return output === undefined || output === '-'
}

/** The outputs the observability options ask for, opened once per command. */
export interface ObserveOutputs {
  sink?: LineSink
  metrics?: MigrationMetrics
  endpoint?: MetricsEndpoint
  /** Show the human progress bar (a terminal and no JSON progress on stderr). */
  bar: boolean
  /** Waits for the linger scrape (if asked) and closes the endpoint and the sink. */
  close(): Promise<void>
}

/**
 * Parses and opens what the observability options ask for. `output` is the command's data output (stdout
 * when undefined or '-'), which JSON must not be mixed into.
 */
export async function openObserveOutputs(
  o: ObserveCommandOptions,
  output: string | undefined,
): Promise<ObserveOutputs> {
  const mode = parseProgressMode(o.progress ?? 'auto')
  if (o.statsJson === '-' && isStdout(output))
    throw new CliError(
      '--stats-json -: stdout carries the data; give -o FILE or a --stats-json FILE',
      ExitCode.USAGE,
    )
  if (o.progressInterval !== undefined && !(o.progressInterval >= 10))
    throw new CliError('--progress-interval: at least 10 ms', ExitCode.USAGE)
  if (mode.kind === 'json' && mode.target === '1' && isStdout(output))
    throw new CliError(
      '--progress json=1: stdout carries the data; use json (stderr), json=FD or json=FILE',
      ExitCode.USAGE,
    )
  let metrics: MigrationMetrics | undefined
  let endpoint: MetricsEndpoint | undefined
  if (o.metricsListen !== undefined) {
    // Loaded only when asked for: prom-client is a good part of the CLI's start-up time.
    const { MigrationMetrics, startMetricsServer } = await import('./metrics.js')
    metrics = new MigrationMetrics()
    endpoint = await startMetricsServer(metrics, o.metricsListen, { allowPublic: o.metricsListenPublic })
  }
  const sink = mode.kind === 'json' ? openLineSink(mode.target) : undefined
  const bar =
    mode.kind === 'bar' || (mode.kind === 'auto' && process.stderr.isTTY === true)
      ? !(sink && sink.fd === 2)
      : false
  return {
    sink,
    metrics,
    endpoint,
    bar,
    async close() {
      try {
        if (endpoint) {
          if (metrics && (o.metricsLinger ?? 0) > 0) await metrics.waitForScrape(o.metricsLinger!)
          await endpoint.close()
        }
      } finally {
        sink?.close()
      }
    },
  }
}

/** Observation of a command that runs one migration (encode, decode, send). */
export async function startObservation(
  command: ObservedCommand,
  o: ObserveCommandOptions,
  output: string | undefined,
): Promise<Observation> {
  const out = await openObserveOutputs(o, output)
  const observer = new RunObserver({
    command,
    id: o.metricsId,
    progress: out.sink,
    sharedSink: true,
    intervalMs: o.progressInterval,
    metrics: out.metrics,
  })
  const unregister = onInterrupt(() =>
    observer.end({ exitCode: 130, interrupted: true, error: 'interrupted' }),
  )
  return {
    observer,
    bar: out.bar,
    metrics: out.metrics,
    endpoint: out.endpoint,
    async run(fn) {
      try {
        await fn()
        observer.end({ exitCode: ExitCode.OK })
      } catch (e) {
        const c = classify(e)
        observer.end({ exitCode: c.exitCode, error: c.message })
        throw e
      } finally {
        unregister()
        try {
          if (o.statsJson !== undefined) writeStatsJson(o.statsJson, observer)
        } finally {
          await out.close()
        }
      }
    },
  }
}

/**
 * Observation of a command that runs many migrations (receive, proxy): one metrics endpoint and one progress
 * sink, one RunObserver per migration (`begin`), whose lines carry the migration id.
 */
export interface SessionObservers {
  readonly outputs: ObserveOutputs
  /** A migration starts: its observer (call attach(), give `listener` to an encoder, end() at the end). */
  begin(command: ObservedCommand, id: string): RunObserver
  /** A connection was refused; `reason` from a small fixed set (e.g. the close-code name). */
  refused(role: MigrationRole, reason: string): void
  /** A migration's connection was resumed. */
  resumed(role: MigrationRole, id: string): void
  close(): Promise<void>
}

export async function startSessionObservers(
  o: ObserveCommandOptions,
  output: string | undefined,
): Promise<SessionObservers> {
  const outputs = await openObserveOutputs(o, output)
  return {
    outputs,
    begin: (command, id) =>
      new RunObserver({
        command,
        id,
        progress: outputs.sink,
        sharedSink: true,
        intervalMs: o.progressInterval,
        metrics: outputs.metrics,
      }),
    refused: (role, reason) => outputs.metrics?.refused(role, reason),
    resumed: (role, id) => outputs.metrics?.resumed(id, role),
    close: () => outputs.close(),
  }
}

/** Writes `observer.report()` to `target` (`-` = stdout). */
export function writeStatsJson(target: string, observer: RunObserver): void {
  const text = `${JSON.stringify(observer.report(), null, 2)}\n`
  if (target === '-') {
    process.stdout.write(text)
    return
  }
  try {
    writeFileSync(target, text)
  } catch (e) {
    throw new CliError(`--stats-json ${target}: ${(e as NodeJS.ErrnoException).code ?? e}`, ExitCode.IO)
  }
}

const pct = (x: number | undefined) => (x === undefined ? '-' : `${(x * 100).toFixed(1)}%`)

/** The human per-pass table of `--stats` (empty when there is only one pass). */
export function passTable(passes: readonly PassStatsJson[]): string {
  if (passes.length < 2) return ''
  const head = [
    'pass',
    'wall',
    'in',
    'out',
    'ratio',
    'pages',
    'full',
    'delta',
    'same',
    'zero',
    'qemu-x',
    'resent',
    'hit',
  ]
  const rows = passes.map((p) => [
    String(p.pass),
    `${(p.wallMs / 1000).toFixed(2)}s`,
    formatBytes(p.bytesIn),
    formatBytes(p.bytesOut),
    p.bytesIn > 0 ? p.ratio.toFixed(3) : '-',
    String(p.pages.total),
    String(p.pages.full),
    String(p.pages.delta),
    String(p.pages.same),
    String(p.pages.zero),
    String(p.pages.foreign),
    pct(p.pages.total > 0 ? p.resentShare : undefined),
    pct(p.hitRate),
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (r: string[]) => `  ${r.map((c, i) => c.padStart(widths[i]!)).join('  ')}`
  return `${['  per pass (QEMU dirty-sync iterations):', line(head), ...rows.map(line)].join('\n')}\n`
}

/**
 * `observeSession` for adapter-libvirt's `startProxy`: one RunObserver per proxied migration (id
 * `METRICS-ID-N`, default `ROLE-PID-N`), and at its end the `--stats` table on stderr and the `--stats-json`
 * document (`{id}` in the file name = the migration number; without it each migration replaces the last).
 */
export function proxySessionObservers(
  observers: SessionObservers,
  role: 'proxy-source' | 'proxy-destination',
  o: { metricsId?: string; statsJson?: string; stats?: boolean },
): (id: number) => ProxySessionObserver {
  return (id) => {
    const obs = observers.begin(role, `${o.metricsId ?? `${role}-${process.pid}`}-${id}`)
    let attached = false
    return {
      passListener: obs.listener,
      attach: (f) => {
        attached = true
        obs.attach('encoder' in f ? encoderSource(f.encoder) : decoderSource(f.decoder))
      },
      end: (r) => {
        // A migration that failed before its relay started still counts (as failed, with no bytes).
        if (!attached) obs.attach(bytesSource(() => ({ bytesIn: 0, bytesOut: 0 })))
        obs.end({ exitCode: r.ok ? ExitCode.OK : ExitCode.PEER, ...(r.error ? { error: r.error } : {}) })
        try {
          if (o.statsJson !== undefined) writeStatsJson(o.statsJson.replaceAll('{id}', String(id)), obs)
        } catch (e) {
          process.stderr.write(`xbzrle ${role.replace('-', ' ')}: ${(e as Error).message}\n`)
        }
        if (o.stats) process.stderr.write(passTable(obs.report().passes))
      },
    }
  }
}

/** `500ms`, `2s`, `1m` or plain seconds → milliseconds (undefined if malformed). */
export function parseDuration(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim())
  if (!m) return undefined
  const n = Number(m[1])
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000)
}
