import { Command } from 'commander'

export async function main(argv: string[]): Promise<number> {
  const program = new Command('xbzrle')
  program.description('Shrink QEMU/libvirt migration streams with XBZRLE, byte-exact.')
  program.command('demo').description('Run the built-in demo').action(() => {
    process.stdout.write('demo: not implemented yet\n')
  })
  await program.parseAsync(argv, { from: 'user' })
  return 0
}
