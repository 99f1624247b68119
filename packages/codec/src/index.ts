export { CacheDesyncError, DECODE_RULES, type DecodeRule, XbzrleDecodeError } from './errors.js'
export { decode, encode, getKernel, kernelName, selectKernelName } from './kernel.js'
export type { EncodeMode, KernelName, XbzrleKernel } from './kernel-types.js'
export {
  CACHE_POLICIES,
  type CacheParameters,
  type CachePolicy,
  type CacheStats,
  cacheParameters,
  DEFAULT_CACHE_PAGE_SIZE,
  DEFAULT_CACHE_POLICY,
  DEFAULT_WAYS,
  emptyStats,
  hashKey,
  isCachePolicy,
  MAX_CACHE_WAYS,
  PageCache,
  type PageCacheOptions,
  sameCacheParameters,
} from './page-cache.js'
export {
  type EncodeResult,
  type ForeignDeltaOutcome,
  PageDeltaDecoder,
  PageDeltaEncoder,
  type PageDeltaOptions,
  type PageFrameKind,
} from './page-delta.js'
export { readUlebSmall, ULEB_SMALL_MAX, ulebSmallLength, writeUlebSmall } from './wire/uleb.js'
