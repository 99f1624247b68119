/**
 * The return path (destination QEMU → source QEMU) is relayed raw by the proxy; this only watches it.
 *
 * Watches (never changes) QEMU's return path: `be16 type | be16 len | data` messages (QEMU 7.2
 * migration.c: SHUT=1, PONG=2, REQ_PAGES_ID=3, REQ_PAGES=4, RECV_BITMAP=5, RESUME_ACK=6; 10.x SWITCHOVER_ACK=7).
 * At the end of a successful migration the destination sends SHUT with a be32 0; a return path that ends
 * without it means the destination did not confirm the migration (it failed, or a proxy or the link died).
 */
export class ReturnPathWatcher {
  messages = 0
  /** be32 payload of the last SHUT message (0 = destination loaded the stream), if any. */
  shut: number | undefined
  /** Set when the bytes stop looking like return-path messages (then no conclusion is drawn). */
  unparsable = false
  private head = Buffer.alloc(4)
  private headLen = 0
  private type = 0
  private left = 0
  private body: Buffer[] = []

  push(chunk: Buffer): void {
    let i = 0
    while (i < chunk.length && !this.unparsable) {
      if (this.left === 0 && this.headLen < 4) {
        const n = Math.min(4 - this.headLen, chunk.length - i)
        chunk.copy(this.head, this.headLen, i, i + n)
        this.headLen += n
        i += n
        if (this.headLen < 4) return
        this.type = this.head.readUInt16BE(0)
        this.left = this.head.readUInt16BE(2)
        if (this.type < 1 || this.type > 7) {
          this.unparsable = true
          return
        }
        this.body = []
        if (this.left === 0) this.complete()
        continue
      }
      const n = Math.min(this.left, chunk.length - i)
      if (this.type === 1) this.body.push(chunk.subarray(i, i + n))
      this.left -= n
      i += n
      if (this.left === 0) this.complete()
    }
  }

  private complete(): void {
    this.messages++
    if (this.type === 1) {
      const b = Buffer.concat(this.body)
      this.shut = b.length >= 4 ? b.readUInt32BE(0) : 1
    }
    this.headLen = 0
    this.left = 0
  }

  /** Why the migration must count as failed, judged from the return path alone (undefined: no objection). */
  verdict(): string | undefined {
    if (this.unparsable || this.messages === 0) return undefined
    if (this.shut === undefined) {
      return 'the return path ended without a SHUT message: the destination did not confirm the migration'
    }
    if (this.shut !== 0) return `the destination QEMU reported a failed migration (SHUT ${this.shut})`
    return undefined
  }
}
