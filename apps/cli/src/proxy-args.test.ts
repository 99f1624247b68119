// `xbzrle proxy` on commander: the checked arguments, the role-specific flags, the security warnings, and the
// refusals that happen before any socket is opened (exit 2).
import { installTestkitHooks, tmpDir } from '@xbzrle/testkit'
import { Command } from 'commander'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  type ProxyArgs,
  parseHostPort,
  proxySecurityWarning,
  registerProxyCommand,
} from './commands/proxy.js'
import { runCli } from './test-cli.js'

installTestkitHooks({ afterEach, afterAll })
const MiB = 1024 * 1024

/** What the proxy action would run with (commander errors and CliErrors are thrown). */
async function parse(argv: string[]): Promise<ProxyArgs> {
  let got: ProxyArgs | undefined
  const program = new Command('xbzrle')
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} })
  registerProxyCommand(
    program,
    (c) => c,
    async (a) => {
      got = a
    },
  )
  await program.parseAsync(['proxy', ...argv], { from: 'user' })
  if (!got) throw new Error('the action did not run')
  return got
}

describe('proxy arguments', () => {
  it('parses source and destination flags and rejects mixed ones', async () => {
    expect(
      await parse(['source', '--listen', '/s.sock', '--connect', 'dst:4000', '--cache=64M']),
    ).toMatchObject({
      role: 'source',
      listen: '/s.sock',
      connect: { host: 'dst', port: 4000 },
      cacheBytes: 64 * MiB,
    })
    expect(
      await parse([
        'destination',
        '--listen',
        '4000',
        '--qemu-socket',
        '/d.sock',
        '--once',
        '--idle-timeout',
        '30',
      ]),
    ).toMatchObject({ role: 'destination', qemuSocket: '/d.sock', once: true, idleTimeoutMs: 30_000 })
    expect(parseHostPort('[::1]:5')).toEqual({ host: '::1', port: 5 })
    await expect(parse(['source', '--listen', '/s.sock'])).rejects.toThrow(/needs --connect HOST:PORT/)
    await expect(
      parse(['destination', '--listen', '4000', '--qemu-socket', '/d', '--cache', '1M']),
    ).rejects.toThrow(/belong to "proxy source"/)
    await expect(
      parse(['source', '--listen', '/s', '--connect', 'h:1', '--max-cache', '1G']),
    ).rejects.toThrow(/belong to "proxy destination"/)
    await expect(parse(['sideways', '--listen', '1'])).rejects.toThrow(/source" or "destination/)
    await expect(parse(['source', '--listen', '/s', '--connect', 'h:1', '--mode', 'tight'])).rejects.toThrow(
      /canonical or compact/,
    )
    await expect(
      parse(['source', '--listen', '/s', '--connect', 'h:1', '--socket-mode', '999']),
    ).rejects.toThrow(/octal/)
    await expect(
      parse(['source', '--listen', '/s', '--connect', 'h:1', '--idle-timeout', 'soon']),
    ).rejects.toThrow(/seconds/)
    await expect(parse(['source', '--listen', '/s', '--connect', 'h:1', '--bogus'])).rejects.toThrow(
      /unknown option/,
    )
  })

  it('parses token/TLS flags, refuses a token on argv, and warns about a token without TLS', async () => {
    const a = await parse([
      'destination',
      '--listen',
      '0.0.0.0:4000',
      '--qemu-socket',
      '/q',
      '--token-file',
      '/t',
      '--tls-cert',
      '/c',
      '--tls-key',
      '/k',
      '--handshake-timeout',
      '2',
      '--allow-insecure-no-token',
    ])
    expect(a).toMatchObject({
      tokenFile: '/t',
      tlsCert: '/c',
      tlsKey: '/k',
      handshakeTimeoutMs: 2000,
      allowInsecureNoToken: true,
    })
    await expect(parse(['source', '--listen', '/s', '--connect', 'h:1', '--token', 'x'])).rejects.toThrow(
      /never given on the command line/,
    )
    await expect(
      parse(['destination', '--listen', '1', '--qemu-socket', '/q', '--tls-cert', '/c']),
    ).rejects.toThrow(/go together/)
    await expect(parse(['destination', '--listen', '1', '--qemu-socket', '/q', '--tls'])).rejects.toThrow(
      /belong to "proxy source"/,
    )
    const src = await parse(['source', '--listen', '/s', '--connect', 'dst.example:4000'])
    expect(proxySecurityWarning(src, 'tok')).toMatch(/to dst\.example without TLS.*--ca FILE or --tls/)
    expect(proxySecurityWarning({ ...src, tls: true }, 'tok')).toBeUndefined()
    expect(proxySecurityWarning(src, undefined)).toBeUndefined()
    const local = await parse(['source', '--listen', '/s', '--connect', '127.0.0.1:4000'])
    expect(proxySecurityWarning(local, 'tok')).toBeUndefined()
    const dst = await parse(['destination', '--listen', '0.0.0.0:4000', '--qemu-socket', '/q'])
    expect(proxySecurityWarning(dst, 'tok')).toMatch(/on 0\.0\.0\.0 without TLS/)
    expect(proxySecurityWarning({ ...dst, tlsCert: '/c', tlsKey: '/k' }, 'tok')).toBeUndefined()
  })
})

describe('proxy --base', () => {
  it('is repeatable on both roles (a base, then the bases it depends on)', async () => {
    expect(
      (
        await parse([
          'source',
          '--listen',
          '/s.sock',
          '--connect',
          '4000',
          '--base',
          'b.xbz',
          '--base',
          'a.save',
        ])
      ).base,
    ).toEqual(['b.xbz', 'a.save'])
    expect(
      (await parse(['destination', '--listen', '4000', '--qemu-socket', '/q.sock', '--base', 'a.save'])).base,
    ).toEqual(['a.save'])
    expect(
      (await parse(['destination', '--listen', '4000', '--qemu-socket', '/q.sock'])).base,
    ).toBeUndefined()
  })

  it('a base that cannot be read stops the proxy before it listens (exit 4, one line)', async () => {
    const r = await runCli([
      'proxy',
      'source',
      '--listen',
      '/nonexistent/s.sock',
      '--connect',
      '4000',
      '--base',
      '/nonexistent/base.save',
    ])
    expect(r.code).toBe(4)
    expect(r.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        /^xbzrle: proxy source: .*base image \/nonexistent\/base.save cannot be used \(no such file\)/,
      ),
    ])
  })
})

describe('xbzrle proxy (built CLI)', () => {
  it('a destination beyond loopback without a token exits 2; a missing token file exits 4', async () => {
    const d = tmpDir('xbzrle-proxy-args-')
    const open = await runCli(
      ['proxy', 'destination', '--listen', '0.0.0.0:0', '--qemu-socket', `${d}/q.sock`],
      undefined,
      { XBZRLE_TOKEN: '' },
    )
    expect(open.code).toBe(2)
    expect(open.stderr).toMatch(
      /proxy destination: refusing to listen on 0\.0\.0\.0 without a token.*--token-file/,
    )
    const source = ['proxy', 'source', '--listen', `${d}/s.sock`, '--connect', '127.0.0.1:1']
    const noFile = await runCli([...source, '--token-file', `${d}/missing`])
    expect(noFile.code).toBe(4)
    expect(noFile.stderr).toMatch(/proxy source: cannot read token file .*missing: ENOENT/)
    const usage = await runCli([...source, '--token', 'x'])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toMatch(/never given on the command line/)
  })
})
