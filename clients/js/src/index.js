// @distributedratelimiter/client: the HTTP client, the Express-style
// middleware and the reference implementation of the algorithms.
export { RateLimiterClient, RateLimiterError, BatchingClient } from './client.js';
export { rateLimit, bindingLimit } from './express.js';
export {
  InMemoryLimiter,
  InvalidRuleError,
  normalizeRule,
  parseAlgorithm,
  parseDuration,
  step,
  apply,
  combine,
  binding,
  capacity,
  expiresAt,
  expiresAtSet,
  freshState,
  systemClock,
  NS,
  RETRY_NEVER,
  MAX_DEBT,
  ALGORITHMS,
} from './limit.js';
