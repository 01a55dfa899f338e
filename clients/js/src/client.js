// HTTP client of the DistributedRateLimiter service.
//
// POST {baseUrl}/v1/check  {"namespace": "...", "subject": "...", "cost": 1}
//
//   200 allowed, 429 denied, both with the decision as JSON:
//     {"allowed": bool, "namespace": "...", "subject": "...",
//      "retry_after_ms": int, "delay_ms": int, "decided_by": "store" | ...,
//      "limits": [{"name", "limit", "remaining", "reset_after_ms", "retry_after_ms", "period_ms"}]}
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
 * @property {number} periodMs the limit's period
 *
 * @typedef {object} CheckResult
 * @property {boolean} allowed
 * @property {number} status 200 or 429
 * @property {string} namespace
 * @property {string} subject
 * @property {number} retryAfterMs
 * @property {number} delayMs
 * @property {string} decidedBy who decided: store, deny-cache, local, open, closed
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
    Object.assign(this, transport({ baseUrl, timeoutMs, fetchImpl, headers }, '/v1/check'));
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
    validateRequest({ namespace, subject, cost });
    const { status, text } = await post(this, JSON.stringify({ namespace, subject, cost }), signal);
    if (status === 200 || status === 429) return decodeDecision(status, text);
    throw new RateLimiterError(errorMessage(status, text), { status, code: 'HTTP_STATUS' });
  }
}

/** The options both clients share, checked; path is the endpoint's. */
function transport({ baseUrl, timeoutMs, fetchImpl, headers }, path) {
  if (typeof baseUrl !== 'string' || baseUrl === '') throw new TypeError('baseUrl is required');
  new URL(baseUrl); // throws on a malformed URL
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new TypeError('timeoutMs must be a positive number');
  if (typeof fetchImpl !== 'function') throw new TypeError('no fetch: use Node.js >= 18 or pass options.fetch');
  return {
    url: baseUrl.replace(/\/+$/, '') + path,
    timeoutMs,
    fetch: fetchImpl,
    headers: { ...headers, 'content-type': 'application/json', accept: 'application/json' },
  };
}

function validateRequest({ namespace, subject, cost }) {
  if (typeof namespace !== 'string' || namespace === '') throw new TypeError('namespace must be a non-empty string');
  if (typeof subject !== 'string' || subject === '') throw new TypeError('subject must be a non-empty string');
  if (!Number.isSafeInteger(cost) || cost < 0) throw new TypeError('cost must be a whole number >= 0');
}

/**
 * POSTs body to c.url within c.timeoutMs (the answer's body included) and
 * resolves with its status and text; rejects with a RateLimiterError of
 * code TIMEOUT, ABORTED (signal) or NETWORK.
 */
async function post(c, body, signal) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, c.timeoutMs);
  const onAbort = () => controller.abort();
  if (signal) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener('abort', onAbort, { once: true });
  }
  try {
    const res = await c.fetch(c.url, { method: 'POST', headers: c.headers, body, signal: controller.signal });
    return { status: res.status, text: await res.text() }; // still under the timeout
  } catch (err) {
    if (timedOut) {
      throw new RateLimiterError(`rate limiter: no answer within ${c.timeoutMs} ms`, { code: 'TIMEOUT', cause: err });
    }
    if (controller.signal.aborted) {
      throw new RateLimiterError('rate limiter: check aborted', { code: 'ABORTED', cause: err });
    }
    throw new RateLimiterError(`rate limiter: request failed: ${err?.message ?? err}`, { code: 'NETWORK', cause: err });
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
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
  return decision(status, body);
}

/** The decision of a parsed /v1/check body answered with status. */
function decision(status, body) {
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
    decidedBy: String(body.decided_by ?? ''),
    limits: (Array.isArray(body.limits) ? body.limits : []).map((l) => ({
      name: String(l?.name ?? ''),
      limit: int(l?.limit),
      remaining: int(l?.remaining),
      resetAfterMs: int(l?.reset_after_ms),
      retryAfterMs: int(l?.retry_after_ms),
      periodMs: int(l?.period_ms),
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

/**
 * BatchingClient: the same check() as RateLimiterClient, but the checks
 * made while others are on their way (and those made in the same tick) go
 * together in one POST {baseUrl}/v1/checks, so a busy application pays one
 * request for many decisions. A lone check goes at once (after the current
 * tick). Each check keeps its own signal; one aborted before its request is
 * sent is not sent. A check the service could not decide rejects alone.
 *
 *   POST /v1/checks  [{"namespace","subject","cost"}, ...]  (at most 1,000)
 *   200 [{...the /v1/check body..., "status": 200|429}, {"status": 4xx|5xx, "error": "..."}]
 */
export class BatchingClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl e.g. "http://ratelimiter:8080"
   * @param {number} [options.timeoutMs] per request (default 1000)
   * @param {number} [options.maxBatch] checks per request, 1 to 1000 (default 256)
   * @param {number} [options.maxInFlight] requests out at once (default 2)
   * @param {typeof fetch} [options.fetch]
   * @param {Record<string, string>} [options.headers]
   */
  constructor({ baseUrl, timeoutMs = 1000, maxBatch = 256, maxInFlight = 2, fetch: fetchImpl = globalThis.fetch, headers = {} } = {}) {
    Object.assign(this, transport({ baseUrl, timeoutMs, fetchImpl, headers }, '/v1/checks'));
    if (!(Number.isSafeInteger(maxBatch) && maxBatch >= 1 && maxBatch <= 1000)) throw new TypeError('maxBatch must be 1 to 1000');
    if (!(Number.isSafeInteger(maxInFlight) && maxInFlight >= 1)) throw new TypeError('maxInFlight must be 1 or more');
    this.maxBatch = maxBatch;
    this.maxInFlight = maxInFlight;
    this.pending = [];
    this.inFlight = 0;
    this.scheduled = false;
  }

  /**
   * @param {{namespace: string, subject: string, cost?: number}} request
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<CheckResult>}
   */
  check({ namespace, subject, cost = 1 } = {}, { signal } = {}) {
    validateRequest({ namespace, subject, cost });
    if (signal?.aborted) return Promise.reject(new RateLimiterError('rate limiter: check aborted', { code: 'ABORTED' }));
    return new Promise((resolve, reject) => {
      this.pending.push({ body: { namespace, subject, cost }, resolve, reject, signal });
      this.#schedule();
    });
  }

  #schedule() {
    if (this.scheduled || this.inFlight >= this.maxInFlight) return;
    this.scheduled = true;
    // After this tick: the checks made in it go together.
    queueMicrotask(() => {
      this.scheduled = false;
      if (this.inFlight < this.maxInFlight && this.pending.length > 0) this.#flush();
    });
  }

  async #flush() {
    this.inFlight++;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.maxBatch).filter((c) => {
          if (!c.signal?.aborted) return true;
          c.reject(new RateLimiterError('rate limiter: check aborted', { code: 'ABORTED' }));
          return false;
        });
        if (batch.length > 0) await this.#send(batch);
      }
    } finally {
      this.inFlight--;
    }
  }

  async #send(batch) {
    let status;
    let text;
    try {
      ({ status, text } = await post(this, JSON.stringify(batch.map((c) => c.body))));
    } catch (err) {
      for (const c of batch) c.reject(err);
      return;
    }
    if (status !== 200) {
      const e = new RateLimiterError(errorMessage(status, text), { status, code: 'HTTP_STATUS' });
      for (const c of batch) c.reject(e);
      return;
    }
    let items;
    try {
      items = JSON.parse(text);
    } catch {
      // not JSON: rejected below
    }
    if (!Array.isArray(items) || items.length !== batch.length) {
      const e = new RateLimiterError(`rate limiter: ${Array.isArray(items) ? items.length : 'no'} answers for ${batch.length} checks`, { status, code: 'BAD_RESPONSE' });
      for (const c of batch) c.reject(e);
      return;
    }
    batch.forEach((c, i) => {
      const it = items[i];
      if (c.signal?.aborted) {
        c.reject(new RateLimiterError('rate limiter: check aborted', { code: 'ABORTED' }));
      } else if (it && typeof it.error === 'string') {
        c.reject(new RateLimiterError(it.error, { status: it.status, code: 'HTTP_STATUS' }));
      } else {
        try {
          c.resolve(decision(it?.status, it));
        } catch (err) {
          c.reject(err);
        }
      }
    });
  }
}
