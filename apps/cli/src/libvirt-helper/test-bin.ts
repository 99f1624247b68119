/**
 * Development entry: the `xbzrle` CLI with the libvirt wiring that index.ts will get (runHelper first, then the
 * `libvirt` subcommand), for tests until then. Run it with
 *   node --conditions=@xbzrle/source --import tsx apps/cli/src/libvirt-helper/test-bin.ts ARGS
 */
import { Command, CommanderError } from 'commander'
import { registerLibvirtCommand, runHelper } from '../commands/libvirt.js'
import { ExitCode, reportError } from '../errors.js'
import { main } from '../index.js'

async function run(argv: string[]): Promise<number> {
  const helper = runHelper(argv)
  if (helper) return helper
  if (argv[0] !== 'libvirt') return main(argv)
  const program = new Command('xbzrle')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  registerLibvirtCommand(program)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return ExitCode.OK
  } catch (e) {
    if (e instanceof CommanderError)
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.help' ? 0 : ExitCode.USAGE
    return reportError(e)
  }
}

process.exitCode = await run(process.argv.slice(2))
