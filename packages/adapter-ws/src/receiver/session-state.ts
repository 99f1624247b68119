/** The receiver session's states and the only transitions between them (used by `Session.to`). */
import type { SessionSnapshot } from './types.js'

/**
 * starting   the pipeline is being created
 * active     stream bytes flow into the pipeline
 * ending     the stream's END arrived, the pipeline was ended; waiting for it to finish
 * finished   the pipeline finished; waiting for the return path to be acked, then the final ack goes out
 * completed  final ack sent (or the sender never came back for it)       ┐
 * failed     pipeline error, protocol error, sender abort, grace expired  │ terminal: the session has left
 * discarded  never announced (nobody holds its secret): no trace kept     │ the registry
 * shut-down  the receiver closed                                          ┘
 */
export type SessionState =
  | 'starting'
  | 'active'
  | 'ending'
  | 'finished'
  | 'completed'
  | 'failed'
  | 'discarded'
  | 'shut-down'

export const SESSION_TRANSITIONS: { readonly [S in SessionState]: readonly SessionState[] } = {
  starting: ['active', 'failed', 'discarded', 'shut-down'],
  active: ['ending', 'failed', 'discarded', 'shut-down'],
  ending: ['finished', 'failed', 'shut-down'],
  finished: ['completed', 'failed', 'shut-down'],
  completed: [],
  failed: [],
  discarded: [],
  'shut-down': [],
}

/** The public snapshot keeps its older, coarser names. */
export const SNAPSHOT_STATE: { readonly [S in SessionState]: SessionSnapshot['state'] } = {
  starting: 'active',
  active: 'active',
  ending: 'ending',
  finished: 'finished',
  completed: 'finished',
  failed: 'failed',
  discarded: 'failed',
  'shut-down': 'failed',
}
