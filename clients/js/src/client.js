// HTTP client of the DistributedRateLimiter service.
//
// POST {baseUrl}/v1/check  {"namespace": "...", "subject": "...", "cost": 1}
//
//   200 allowed, 429 denied, both with the decision as JSON:
//     {"allowed": bool, "namespace": "...", "subject": "...",
//      "retry_after_ms": int, "delay_ms": int,
//      "limits": [{"name", "limit", "remaining", "reset_after_ms", "retry_after_ms"}]}
//   400, 404, 413 (and any other status) with {"error": "..."}
//
// check() resolves with the decision (a 429 is a decision, not an error) and
// rejects with a RateLimiterError when no decision could be had.

/** Why a check produced no decision. */
export class RateLimiterError extends Error {
  /**
   * @param {string} message
   * @param {object} [details]
   * @param {number} [details.status] the HTTP status, 0 when there was no response
   * @param {'HTTP_STATUS'|'TIMEOUT'|'ABORTED'|'NETWORK'|'BAD_RESPONSE'} [details.code]
   * @param {unknown} [details.cause]
   */
  constructor(message, { status = 0, code = 'HTTP_STATUS', cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'RateLimiterError';
    this.status = status;
    this.code = code;
  }
}

/**
 * A decision of the service, decoded with camelCase names.
 * retryAfterMs is -1 when the request can never pass (cost above capacity).
 *
 * @typedef {object} LimitStatus
 * @property {string} name
 * @property {number} limit
 * @property {number} remaining
 * @property {number} resetAfterMs
 * @property {number} retryAfterMs
 *
 * @typedef {object} CheckResult
 * @property {boolean} allowed
 * @property {number} status 200 or 429
 * @property {string} namespace
 * @property {string} subject
 * @property {number} retryAfterMs
 * @property {number} delayMs
 * @property {LimitStatus[]} limits
 */

export class RateLimiterClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl e.g. "http://ratelimiter:8080"
   * @param {number} [options.timeoutMs] per check, response body included (default 1000)
   * @param {typeof fetch} [options.fetch] a fetch implementation (default: global fetch)
   * @param {Record<string, string>} [options.headers] extra request headers
   */
  constructor({ baseUrl, timeoutMs = 1000, fetch: fetchImpl = globalThis.fetch, headers = {} } = {}) {
    if (typeof baseUrl !== 'string' || baseUrl === '') throw new TypeError('baseUrl is required');
    new URL(baseUrl); // throws on a malformed URL
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new TypeError('timeoutMs must be a positive number');
    if (typeof fetchImpl !== 'function') throw new TypeError('no fetch: use Node.js >= 18 or pass options.fetch');
    this.url = baseUrl.replace(/\/+$/, '') + '/v1/check';
    this.timeoutMs = timeoutMs;
    this.fetch = fetchImpl;
    this.headers = { ...headers, 'content-type': 'application/json', accept: 'application/json' };
  }

  /**
   * Checks (and, when allowed, consumes) `cost` units for `subject` in
   * `namespace`. Cost 0 is a peek.
   *
   * @param {{namespace: string, subject: string, cost?: number}} request
   * @param {{signal?: AbortSignal}} [options] a signal to cancel the check
   * @returns {Promise<CheckResult>}
   */
  async check({ namespace, subject, cost = 1 } = {}, { signal } = {}) {
    if (typeof namespace !== 'string' || namespace === '') throw new TypeError('namespace must be a non-empty string');
    if (typeof subject !== 'string' || subject === '') throw new TypeError('subject must be a non-empty string');
    if (!Number.isSafeInteger(cost) || cost < 0) throw new TypeError('cost must be a whole number >= 0');

    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs);
    const onAbort = () => controller.abort();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener('abort', onAbort, { once: true });
    }

    let status;
    let text;
    try {
      const res = await this.fetch(this.url, {
        method: 'POST',
        headers: this.headers,
        body: JSON.stringify({ namespace, subject, cost }),
        signal: controller.signal,
      });
      status = res.status;
      text = await res.text(); // still under the timeout
    } catch (err) {
      if (timedOut) {
        throw new RateLimiterError(`rate limiter: no answer within ${this.timeoutMs} ms`, { code: 'TIMEOUT', cause: err });
      }
      if (controller.signal.aborted) {
        throw new RateLimiterError('rate limiter: check aborted', { code: 'ABORTED', cause: err });
      }
      throw new RateLimiterError(`rate limiter: request failed: ${err?.message ?? err}`, { code: 'NETWORK', cause: err });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }

    if (status === 200 || status === 429) return decodeDecision(status, text);
    throw new RateLimiterError(errorMessage(status, text), { status, code: 'HTTP_STATUS' });
  }
}

function decodeDecision(status, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new RateLimiterError(`rate limiter: HTTP ${status} with a body that is not JSON`, {
      status,
      code: 'BAD_RESPONSE',
      cause: err,
    });
  }
  // A 429 from something in front of the service (a proxy) has no decision.
  if (body === null || typeof body !== 'object' || body.allowed !== (status === 200)) {
    throw new RateLimiterError(`rate limiter: HTTP ${status} without a matching decision`, {
      status,
      code: 'BAD_RESPONSE',
    });
  }
  const int = (v) => (Number.isFinite(v) ? v : 0);
  return {
    allowed: body.allowed,
    status,
    namespace: String(body.namespace ?? ''),
    subject: String(body.subject ?? ''),
    retryAfterMs: int(body.retry_after_ms),
    delayMs: int(body.delay_ms),
    limits: (Array.isArray(body.limits) ? body.limits : []).map((l) => ({
      name: String(l?.name ?? ''),
      limit: int(l?.limit),
      remaining: int(l?.remaining),
      resetAfterMs: int(l?.reset_after_ms),
      retryAfterMs: int(l?.retry_after_ms),
    })),
  };
}

function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string' && body.error !== '') return body.error;
  } catch {
    // not JSON: fall through
  }
  const snippet = String(text ?? '').trim().slice(0, 200);
  return snippet === '' ? `rate limiter: HTTP ${status}` : `rate limiter: HTTP ${status}: ${snippet}`;
}
