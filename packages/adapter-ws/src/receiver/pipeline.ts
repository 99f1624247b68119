/** Calls the pipeline factory and normalises its two result shapes (a Writable, or `{ writable, done? }`). */
import type { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { PipelineFactory, SessionInfo } from './types.js'

export async function openPipeline(
  factory: PipelineFactory,
  info: SessionInfo,
): Promise<{ writable: Writable; done: Promise<unknown> }> {
  const p = await factory(info)
  // a Writable has write(); `{ writable }` is the object form (a Duplex also has a `writable` boolean)
  const writable =
    'writable' in p && typeof (p as { writable: unknown }).writable === 'object' && !('write' in p)
      ? (p as { writable: Writable }).writable
      : (p as Writable)
  // without `done`, the Writable finishing is the end
  const done = (p as { done?: Promise<unknown> }).done ?? finished(writable)
  return { writable, done: Promise.resolve(done) }
}
