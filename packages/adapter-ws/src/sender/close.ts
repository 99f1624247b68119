/** How a connection attempt ended, as one line for the user and whether retrying can help (a pure function). */
import { CloseCode, closeCodeName, FATAL_CLOSE_CODES } from '../codes.js'
import type { WsRefuse } from '../messages.js'

/** Certificate problems do not go away by retrying. */
const TLS_ERROR = /CERT|SIGNATURE|ALTNAME|SELF_SIGNED|ERR_TLS|ERR_SSL/

export interface CloseFacts {
  readonly code: number
  readonly reason: string
  /** The receiver's `refuse` message, if one came before the close. */
  readonly refuse: Pick<WsRefuse, 'code' | 'message'> | undefined
  /** The last socket error (ECONNREFUSED, a TLS error, an HTTP status before the upgrade, our own timeouts). */
  readonly lastError: Error | undefined
  /** A protocol violation by the receiver that we detected. */
  readonly fatalError: string | undefined
}

export function classifyClose(f: CloseFacts): { fatal: boolean; message: string } {
  const name = closeCodeName(f.code)
  const errCode = (f.lastError as NodeJS.ErrnoException | undefined)?.code ?? ''
  let message: string
  if (f.fatalError) message = f.fatalError
  else if (f.refuse) message = `refused: ${f.code} ${f.refuse.code}: ${f.refuse.message}`
  else if (f.code >= 4000 || (f.code !== 1006 && f.code !== 1005 && f.code !== 1000))
    message = `connection closed: ${f.code}${name ? ` ${name}` : ''}${f.reason ? `: ${f.reason}` : ''}`
  else message = f.lastError ? f.lastError.message : `connection closed (${f.code}${name ? ` ${name}` : ''})`
  const fatal =
    !!f.fatalError ||
    FATAL_CLOSE_CODES.has(f.code) ||
    // a refusal is final, except "too many sessions", which a later attempt may find room for
    (f.refuse !== undefined && f.code !== CloseCode.TOO_MANY_SESSIONS) ||
    TLS_ERROR.test(errCode) ||
    // an HTTP 4xx instead of the upgrade (e.g. 404 for a path not served)
    /Unexpected server response: 4\d\d/.test(f.lastError?.message ?? '')
  return { fatal, message }
}
