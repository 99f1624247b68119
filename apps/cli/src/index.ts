import { readFileSync } from 'node:fs'
import { WORKLOADS, type Workload } from '@xbzrle/adapter-libvirt'
import { DEFAULT_WAYS, MAX_CACHE_WAYS } from '@xbzrle/codec'
import { CODEC_NAMES, type Compression, parseCliOptions, SUPPORTED_VERSIONS } from '@xbzrle/protocol'
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
// The other commands are imported when they run: `xbzrle -c` / `-dc` (libvirt's helper form, started once per
// save or migration) should not load WebSocket, demo and bench code first.
import { runDecode, runEncode, runRebase } from './commands/filter.js'
import { registerLibvirtCommand, runHelper } from './commands/libvirt.js'
import { registerProxyCommand, SilentExit } from './commands/proxy.js'
import { CliError, ExitCode, reportError } from './errors.js'
import { helperForm } from './helper-form.js'
import { defaultThreads, parseSize } from './io.js'
import { parseDuration } from './observe/run.js'

const SETUPS = `
Typical setups:
  Save / restore (libvirt, save_image_format = "raw"):
    virsh save vm vm.save && xbzrle encode vm.save -o vm.save.xbz
    xbzrle decode vm.save.xbz -o vm.save && virsh restore vm.save

  A save against the previous save of the same VM (only the differences are stored; the base is verified):
    xbzrle encode vm.2.save --base vm.1.save -o vm.2.xbz
    xbzrle decode vm.2.xbz --base vm.1.save -o vm.2.save
    xbzrle rebase vm.2.xbz --base vm.1.save -o vm.2.full.xbz     (standalone again)
    per domain, automatically: xbzrle encode DOM.save --base-store DIR -o OUT / xbzrle decode OUT --base-store DIR

  Live migration over WebSocket (TLS + token):
    destination:  qemu-system-x86_64 ... -incoming 'exec:xbzrle receive --listen 0.0.0.0:8443 --token-file T --tls-cert C --tls-key K'
    source (QMP): migrate "exec:xbzrle send wss://dst:8443/vm1 --token-file T --ca CA"

  libvirt live migration through a unix-socket proxy pair (return path relayed):
    dst# xbzrle proxy destination --listen 0.0.0.0:49300 --qemu-socket /var/lib/libvirt/qemu/xbz.sock --token-file T --tls-cert C --tls-key K
    src# xbzrle proxy source --listen /var/lib/libvirt/qemu/xbz.sock --connect DST:49300 --token-file T --ca CA
    src# virsh migrate --live --p2p DOM qemu+ssh://DST/system --migrateuri unix:///var/lib/libvirt/qemu/xbz.sock

  Plain QEMU live migration through exec: pipes:
    destination:  qemu-system-x86_64 ... -incoming 'exec:xbzrle decode < /run/mig.xbz'
    source (QMP): migrate "exec:xbzrle encode > /run/mig.xbz"
    (or any pipe between hosts: exec:xbzrle -c | ssh dst 'xbzrle -dc | ...')

  As a libvirt-style helper (lzop-compatible flags):
    xbzrle -c  < qemu.stream > stream.xbz
    xbzrle -dc < stream.xbz  > qemu.stream

Exit codes: 0 ok, 2 usage, 3 bad or corrupt input, 4 I/O error, 5 network peer, 6 missing tool, 1 internal error;
128 + the signal number when interrupted (130 SIGINT, 143 SIGTERM, 129 SIGHUP). An -o FILE is replaced only by a
complete output: after any error or signal the old file is left as it was.
`

/** A repeatable option: every value, in order. */
function collectArg(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v]
}

function sizeArg(v: string): number {
  try {
    return parseSize(v)
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message)
  }
}

function intArg(min: number, max: number) {
  return (v: string) => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`expected an integer in ${min}..${max}`)
    return n
  }
}

/** `500ms`, `2s`, `1m` or plain seconds → milliseconds. */
function durationArg(v: string): number {
  const d = parseDuration(v)
  if (d === undefined) throw new InvalidArgumentError('expected a duration such as 500ms, 2s, 1m')
  return d
}

/** The observability options shared by the filter commands (docs/observability.md). */
function addObserveOptions(cmd: Command): Command {
  return cmd
    .option(
      '--progress <mode>',
      'auto (a bar on a terminal), bar, none, json (lines on stderr), json=FD or json=FILE',
      'auto',
    )
    .option('--progress-interval <duration>', 'interval of the json totals lines (default 1s)', durationArg)
    .option('--stats-json <file>', 'write per-pass statistics as JSON at the end (- = stdout, with -o)')
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics on /metrics (loopback addresses only)')
    .option('--metrics-listen-public', 'allow --metrics-listen on a non-loopback address')
    .option('--metrics-id <id>', 'the id label of this migration in the metrics (default: COMMAND-PID)')
    .option(
      '--metrics-linger <duration>',
      'after the end, serve metrics until one more scrape, at most this long (default 0)',
      durationArg,
    )
}

function observeOf(o: Record<string, unknown>) {
  return {
    progress: o.progress as string | undefined,
    progressInterval: o.progressInterval as number | undefined,
    statsJson: o.statsJson as string | undefined,
    metricsListen: o.metricsListen as string | undefined,
    metricsListenPublic: o.metricsListenPublic as boolean | undefined,
    metricsId: o.metricsId as string | undefined,
    metricsLinger: o.metricsLinger as number | undefined,
  }
}

function formatVersionOption(): Option {
  return new Option('--format-version <n>', 'xbzrle format version to write (1 for old readers)')
    .choices(SUPPORTED_VERSIONS.map(String))
    .argParser((v) => Number(v))
}

function compressOption(): Option {
  return new Option(
    '--compress <codec>',
    'second stage for format v2+ batches: auto (per batch, by the link rate; default on pipes and networks) or a fixed codec (default for files: best installed)',
  ).choices(['auto', ...CODEC_NAMES])
}

function bypassOption(): Option {
  return new Option(
    '--bypass <mode>',
    'send pages past the cache while this encoder, not the link, is the bottleneck: auto (with --compress auto, the default on pipes and networks), always or never (default: $XBZRLE_BYPASS, else auto)',
  ).choices(['auto', 'always', 'never'])
}

function compressionOf(o: { compress?: string; formatVersion?: number }): Compression | 'auto' | undefined {
  if (o.compress === undefined) return undefined
  if (o.formatVersion === 1) throw new CliError('--compress needs format version 2 or later', ExitCode.USAGE)
  return o.compress === 'auto' ? 'auto' : { codec: o.compress as Compression['codec'] }
}

/**
 * The codec options of a command (--cache-size, --ways, --mode), validated through the protocol's
 * CliOptionsSchema: the codec's own values and defaults (ways a power of two up to 128, enough cache for `ways`
 * pages). A bad value is a usage error naming the flag, before any input is read. An absent --cache-size stays
 * absent (the encoder sizes the cache from the guest's RAM).
 */
function codecOptions(o: { cacheSize?: number; ways?: number; mode?: string }): {
  cacheSize: number | undefined
  ways: number
  mode: 'canonical' | 'compact'
} {
  const r = parseCliOptions({ cacheSize: o.cacheSize, ways: o.ways, mode: o.mode })
  if (!r.ok) throw new CliError(r.error, ExitCode.USAGE)
  return { cacheSize: r.options.cacheSize, ways: r.options.ways, mode: r.options.mode }
}

/**
 * The version of this package, read at run time from the package.json next to src/ or dist/ (both one level
 * below it): the same file in a checkout (tsx or built) and in a packed install.
 */
export function cliVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
    if (typeof pkg.version === 'string') return pkg.version
  } catch {
    // fall through
  }
  return 'unknown'
}

export function buildProgram(): Command {
  const program = new Command('xbzrle')
  program
    .description(
      'Shrink QEMU/libvirt migration streams and save images with XBZRLE deltas, and give QEMU back the exact bytes.',
    )
    .version(cliVersion(), '-V, --version')
    .option('--debug', 'print stack traces on errors')
    .addHelpText('after', SETUPS)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })

  const encode = program
    .command('encode')
    .description('encode a QEMU migration stream or libvirt save image (FILE or stdin) into an xbzrle stream')
    .argument('[input]', 'input file (default: stdin)')
    .option('-o, --output <file>', 'output file, replaced only once complete (default: stdout)')
    .option('--cache-size <bytes>', 'page cache budget, e.g. 256M (default: guest RAM, up to 1 GiB)', sizeArg)
    .option(
      '--ways <n>',
      `cache associativity, a power of two (default ${DEFAULT_WAYS})`,
      intArg(1, MAX_CACHE_WAYS),
    )
    .addOption(
      new Option('--mode <mode>', 'delta encoding').choices(['canonical', 'compact']).default('canonical'),
    )
    .addOption(formatVersionOption())
    .addOption(compressOption())
    .addOption(bypassOption())
    .option(
      '--threads <n>',
      `worker threads for a fixed zstd second stage, same output bytes (0: on the main thread; default here ${defaultThreads()}, ${defaultThreads(undefined, true)} from a regular file to a regular file: 0 below 4 cores (1 file to file on 2 or 3), else cores - 1, at most 4)`,
      intArg(0, 64),
    )
    .option(
      '--base <file>',
      'encode against an earlier image of the same VM (QEMU stream, save image or xbzrle stream); repeat it for the bases an xbzrle base depends on',
      collectArg,
    )
    .option(
      '--base-store <dir>',
      'libvirt save flow: encode a save image against the previous save of its domain (by UUID) kept in DIR, and record this one (-o required)',
    )
    .option(
      '--max-chain <n>',
      'with --base-store: saves per chain before a standalone one (default 4)',
      intArg(1, 64),
    )
    .option('--stats', 'print a summary and a per-pass table on stderr at the end')
    .option(
      '--strict',
      'a truncated or unparseable input is an error (exit 3; with -o the old file stays) instead of a warning',
    )
    .addHelpText(
      'after',
      '\nExample:\n  xbzrle encode vm.save -o vm.save.xbz --stats\n  qemu (QMP): migrate "exec:xbzrle encode > /srv/mig.xbz"\n  migrate "exec:xbzrle encode --progress json=/run/mig.progress --metrics-listen 127.0.0.1:9464 > /srv/mig.xbz"\n',
    )
  addObserveOptions(encode).action(async (input: string | undefined, o) => {
    await runEncode(input, {
      output: o.output,
      ...codecOptions(o),
      formatVersion: o.formatVersion,
      compression: compressionOf(o),
      bypass: o.bypass,
      threads: o.threads,
      stats: o.stats,
      strict: o.strict,
      base: o.base,
      baseStore: o.baseStore,
      maxChain: o.maxChain,
      ...observeOf(o),
    })
  })

  const decode = program
    .command('decode')
    .description('decode an xbzrle stream (FILE or stdin) back into the exact original bytes')
    .argument('[input]', 'input file (default: stdin)')
    .option('-o, --output <file>', 'output file, replaced only once complete (default: stdout)')
    .option('--max-cache <bytes>', 'refuse streams that need a bigger cache (default 4G)', sizeArg)
    .option(
      '--base <file>',
      'the base image the stream was encoded against (verified by SHA-256 first); repeat it for a chain of bases',
      collectArg,
    )
    .option('--base-store <dir>', 'find the base in the libvirt save flow directory (encode --base-store)')
    .option('--stats', 'print a summary on stderr at the end')
    .addHelpText(
      'after',
      "\nExample:\n  xbzrle decode vm.save.xbz -o vm.save\n  qemu-system-x86_64 ... -incoming 'exec:xbzrle decode /srv/mig.xbz'\n",
    )
  addObserveOptions(decode).action(async (input: string | undefined, o) => {
    await runDecode(input, {
      output: o.output,
      maxCache: o.maxCache,
      stats: o.stats,
      base: o.base,
      baseStore: o.baseStore,
      ...observeOf(o),
    })
  })

  program
    .command('rebase')
    .description(
      'turn a stream encoded against a base image into a standalone one (--flatten, the default) or re-base it (--onto)',
    )
    .argument('<stream>', 'the based xbzrle stream (FILE or - for stdin)')
    .option(
      '--base <file>',
      'the base image the stream was encoded against; repeat it for the bases that one depends on',
      collectArg,
    )
    .option('--base-store <dir>', 'or find the base in the libvirt save flow directory (encode --base-store)')
    .option('--flatten', 'write a standalone stream that needs no base (the default)')
    .option('--onto <file>', 'encode against this base image instead (repeat it for a chain)', collectArg)
    .option('-o, --output <file>', 'output file, replaced only once complete (default: stdout)')
    .option('--max-cache <bytes>', 'refuse streams that need a bigger cache (default 4G)', sizeArg)
    .option('--cache-size <bytes>', 'cache of the new stream (default: guest RAM, up to 1 GiB)', sizeArg)
    .addOption(formatVersionOption())
    .addOption(compressOption())
    .option('--stats', 'print a summary on stderr at the end')
    .addHelpText(
      'after',
      '\nExample:\n  xbzrle rebase vm.2.xbz --base vm.1.save -o vm.2.full.xbz   # vm.1.save may now be deleted\n',
    )
    .action(async (stream: string, o) => {
      if (o.flatten && o.onto) throw new CliError('--flatten and --onto exclude each other', ExitCode.USAGE)
      await runRebase(stream, {
        output: o.output,
        base: o.base,
        baseStore: o.baseStore,
        onto: o.onto,
        maxCache: o.maxCache,
        cacheSize: o.cacheSize,
        formatVersion: o.formatVersion,
        compression: compressionOf(o),
        stats: o.stats,
      })
    })

  program
    .command('inspect')
    .description('show what is inside a QEMU stream, a libvirt save image or an xbzrle stream')
    .argument('<file>', 'file to inspect')
    .option('--json', 'machine-readable output')
    .option('--cache-size <bytes>', 'cache size to estimate the xbzrle output with', sizeArg)
    .addHelpText(
      'after',
      '\nExample:\n  xbzrle inspect vm.save\n  xbzrle inspect --json mig.xbz | jq .frames\n',
    )
    .action(async (file: string, o) => {
      const { runInspect } = await import('./commands/inspect.js')
      await runInspect(file, { json: o.json, cacheSize: o.cacheSize })
    })

  program
    .command('demo')
    .description(
      'simulate a busy guest migrating, pipe its QEMU stream through encode -> decode, verify and compare',
    )
    .addOption(
      new Option('--workload <name>', 'what the guest does').choices(WORKLOADS as string[]).default('sparse'),
    )
    .option('--mem <MiB>', 'guest RAM in MiB', intArg(1, 4096), 64)
    .option('--passes <n>', 'dirty passes after the first full pass', intArg(0, 100), 6)
    .option('--seed <n>', 'random seed', intArg(0, 2 ** 31), 1)
    .option(
      '--qemu',
      'a real live migration between two QEMU processes instead (needs QEMU and a source checkout)',
    )
    .addHelpText('after', '\nExample:\n  xbzrle demo --workload text --mem 128\n  npm run demo -- --qemu\n')
    .action(async (o) => {
      if (o.qemu)
        await (await import('./commands/demo-qemu.js')).runQemuDemo({ workload: o.workload, memMiB: o.mem })
      else
        await (await import('./commands/demo.js')).runDemo({
          workload: o.workload as Workload,
          memMiB: o.mem,
          passes: o.passes,
          seed: o.seed,
        })
    })
  const send = program
    .command('send')
    .description(
      'encode a QEMU migration stream (FILE or stdin) and send it to an xbzrle receiver over WebSocket',
    )
    .argument('<url>', 'ws://HOST:PORT/ID or wss://HOST:PORT/ID')
    .argument('[input]', 'input file (default: stdin)')
    .option('--token-file <file>', 'shared secret, from a file (or set XBZRLE_TOKEN / --token-env)')
    .option('--token-env <name>', 'environment variable that holds the shared secret')
    .option('--ca <file>', 'CA certificate (PEM) that signed the receiver certificate, for wss://')
    .option('--max-rate <bytes>', 'cap the bandwidth, bytes per second (e.g. 100M)', sizeArg)
    .option('--migration-id <id>', 'name of this migration on the receiver (default: random)')
    .option('--encoded', 'the input is already an xbzrle stream: send it as it is')
    .option(
      '--base <file>',
      'an earlier image of this VM that the receiver may hold: encode against it if the receiver holds the same (repeat for its own bases)',
      collectArg,
    )
    .option('--cache-size <bytes>', 'page cache budget (default: guest RAM, up to 1 GiB)', sizeArg)
    .addOption(
      new Option('--mode <mode>', 'delta encoding').choices(['canonical', 'compact']).default('canonical'),
    )
    .option('--zero-mask', 'skip WebSocket masking (faster; only between trusted peers)')
    .addOption(compressOption())
    .addOption(bypassOption())
    .option('--stats', 'print a summary on stderr at the end')
    .addHelpText(
      'after',
      '\nExample (source QEMU, QMP):\n  migrate "exec:XBZRLE_TOKEN=$(cat /etc/xbzrle/token) xbzrle send wss://dst.example:8443/vm1 --ca /etc/xbzrle/ca.pem"\n',
    )
  addObserveOptions(send).action(async (url: string, input: string | undefined, o) => {
    const { runSend } = await import('./commands/ws.js')
    await runSend(url, input, { ...o, ...codecOptions(o), compression: compressionOf(o) ?? 'auto' })
  })

  const receive = program
    .command('receive')
    .description('accept migrations over WebSocket, decode them, and hand each one to stdout, a file or QEMU')
    .requiredOption('--listen <host:port>', 'address to listen on, e.g. 0.0.0.0:8443')
    .option('--token-file <file>', 'shared secret, from a file (or set XBZRLE_TOKEN / --token-env)')
    .option('--token-env <name>', 'environment variable that holds the shared secret')
    .option('--tls-cert <file>', 'certificate (PEM) for wss://')
    .option('--tls-key <file>', 'private key (PEM) for wss://')
    .option('--allow-insecure-no-token', 'allow listening on a non-loopback address without a token')
    .option(
      '-o, --output <file>',
      'write each decoded stream to this file, renamed into place once verified ({id} = migration id; without {id}, one migration at a time)',
    )
    .option(
      '--connect <unix:path>',
      "hand each decoded stream to a destination QEMU's -incoming unix: socket",
    )
    .option('--once', 'exit after the first migration (implied when writing to stdout)')
    .option(
      '--base <file>',
      'an earlier image of the incoming VM held here (named in the handshake; a sender holding the same encodes against it)',
      collectArg,
    )
    .option('--max-memory <bytes>', 'global memory cap for all sessions', sizeArg)
    .option('--max-cache <bytes>', 'largest cache one stream may ask for', sizeArg)
    .option(
      '--pre-auth-timeout <ms>',
      'drop a connection that has not sent a hello with a valid token within this time (default 3000)',
      intArg(100, 600_000),
    )
    .option(
      '--max-pre-auth <n>',
      'connections held before they show the token; the oldest idle one is dropped for a new one (default 64)',
      intArg(1, 65_536),
    )
    .option('--stats', 'report each migration on stderr')
    .addHelpText(
      'after',
      "\nExample (destination QEMU):\n  qemu-system-x86_64 ... -incoming 'exec:XBZRLE_TOKEN=$(cat /etc/xbzrle/token) xbzrle receive --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem'\n",
    )
  addObserveOptions(receive).action(async (o) => {
    const { runReceive } = await import('./commands/ws.js')
    await runReceive(o)
  })

  registerProxyCommand(program, addObserveOptions)

  program
    .command('bench')
    .description("measure this machine's encode/decode speed and ratio on a file or a simulated guest")
    .argument('[file]', 'a QEMU migration stream or libvirt save image (default: a simulated guest)')
    .addOption(
      new Option('--workload <name>', 'simulated workload').choices(WORKLOADS as string[]).default('sparse'),
    )
    .option('--mem <MiB>', 'simulated guest RAM in MiB', intArg(1, 4096), 64)
    .option('--passes <n>', 'simulated dirty passes', intArg(0, 100), 6)
    .option('--cache-size <bytes>', 'page cache budget', sizeArg)
    .addOption(
      new Option('--mode <mode>', 'delta encoding').choices(['canonical', 'compact']).default('canonical'),
    )
    .option('--rounds <n>', 'repetitions (the median is reported)', intArg(1, 50), 3)
    .option('--json', 'machine-readable output')
    .addHelpText(
      'after',
      '\nExample:\n  xbzrle bench vm.save --rounds 5\n  xbzrle bench --workload text --mem 256 --json\n',
    )
    .action(async (file: string | undefined, o) => {
      const codec = codecOptions(o)
      const { runBench } = await import('./commands/bench.js')
      await runBench(file, {
        workload: o.workload as Workload,
        memMiB: o.mem,
        passes: o.passes,
        cacheSize: codec.cacheSize,
        mode: codec.mode,
        rounds: o.rounds,
        json: o.json,
      })
    })
  registerLibvirtCommand(program)
  return program
}

export async function main(argv: string[]): Promise<number> {
  const helper = runHelper(argv)
  if (helper) return helper
  const debug = argv.includes('--debug')
  const args = helperForm(argv) ?? argv
  const program = buildProgram()
  try {
    await program.parseAsync(args, { from: 'user' })
    return ExitCode.OK
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message; help and version are not errors.
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      )
        return 0
      return ExitCode.USAGE
    }
    if (e instanceof SilentExit) return e.exitCode
    return reportError(e, debug)
  }
}

export { CliError, ExitCode, helperForm }
