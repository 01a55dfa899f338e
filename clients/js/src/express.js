// Express-style middleware: (req, res, next). It needs no Express: it uses
// only res.statusCode, res.setHeader, res.end and res.headersSent, which
// Node's http.ServerResponse and Express's res both have, so it also works
// with a plain node:http server or Connect.

/**
 * The limit that best explains a decision, as the Go service's Binding does:
 * when denied, the denying limit with the longest wait (-1, "never", counts
 * as the longest); otherwise the limit with the fewest remaining units.
 * A limit denies iff its retryAfterMs is not 0.
 *
 * @param {import('./client.js').CheckResult} decision
 * @returns {import('./client.js').LimitStatus|undefined}
 */
export function bindingLimit(decision) {
  const limits = decision.limits ?? [];
  let best;
  if (!decision.allowed) {
    for (const l of limits) {
      if (l.retryAfterMs === 0) continue;
      if (best === undefined) best = l;
      else if (best.retryAfterMs === -1) break;
      else if (l.retryAfterMs === -1 || l.retryAfterMs > best.retryAfterMs) best = l;
    }
    if (best !== undefined) return best;
  }
  for (const l of limits) {
    if (best === undefined || l.remaining < best.remaining) best = l;
  }
  return best;
}

/** Milliseconds to whole seconds, rounded up. */
const ceilSeconds = (ms) => Math.ceil(ms / 1000);

/**
 * Creates the middleware.
 *
 * @param {object} options
 * @param {{check: (r: {namespace: string, subject: string, cost: number}) => Promise<import('./client.js').CheckResult>}} options.client
 *   a RateLimiterClient (or anything with the same check method)
 * @param {string} options.namespace the service namespace, such as "orders"
 * @param {(req: any) => string} options.subject the subject of a request, such as its user id
 * @param {(req: any) => number} [options.cost] the cost of a request (default 1)
 * @param {'open'|'closed'} [options.onError] when the service gives no decision:
 *   'open' lets the request through (default), 'closed' answers 503
 * @param {(err: Error, req: any) => void} [options.onServiceError] called with
 *   every service error, e.g. to log or count them (fail-open hides outages)
 */
export function rateLimit({ client, namespace, subject, cost, onError = 'open', onServiceError } = {}) {
  if (!client || typeof client.check !== 'function') throw new TypeError('rateLimit: client with a check method is required');
  if (typeof namespace !== 'string' || namespace === '') throw new TypeError('rateLimit: namespace is required');
  if (typeof subject !== 'function') throw new TypeError('rateLimit: subject must be a function (req) => string');
  if (cost !== undefined && typeof cost !== 'function') throw new TypeError('rateLimit: cost must be a function (req) => number');
  if (onError !== 'open' && onError !== 'closed') throw new TypeError("rateLimit: onError must be 'open' or 'closed'");

  return async function rateLimitMiddleware(req, res, next) {
    let request;
    try {
      request = { namespace, subject: subject(req), cost: cost ? cost(req) : 1 };
      if (typeof request.subject !== 'string' || request.subject === '') {
        throw new TypeError('rateLimit: subject(req) must return a non-empty string');
      }
      if (!Number.isSafeInteger(request.cost) || request.cost < 0) {
        throw new TypeError('rateLimit: cost(req) must return a whole number >= 0');
      }
    } catch (err) {
      next(err); // a bug in the caller's functions, not a service failure
      return;
    }

    let decision;
    try {
      decision = await client.check(request);
    } catch (err) {
      onServiceError?.(err, req);
      if (onError === 'open') {
        next();
      } else {
        sendJSON(res, 503, { error: 'rate limiter unavailable' });
      }
      return;
    }

    req.rateLimit = decision; // handlers may use delayMs (leaky bucket shaping)
    if (!res.headersSent) {
      const binding = bindingLimit(decision);
      if (binding !== undefined) {
        res.setHeader('X-RateLimit-Limit', String(binding.limit));
        res.setHeader('X-RateLimit-Remaining', String(binding.remaining));
        res.setHeader('X-RateLimit-Reset', String(ceilSeconds(binding.resetAfterMs)));
      }
    }
    if (decision.allowed) {
      next();
      return;
    }
    if (decision.retryAfterMs !== -1 && !res.headersSent) {
      res.setHeader('Retry-After', String(Math.max(1, ceilSeconds(decision.retryAfterMs))));
    }
    sendJSON(res, 429, {
      error: decision.retryAfterMs === -1 ? 'request exceeds the rate limit capacity' : 'rate limit exceeded',
      retry_after_ms: decision.retryAfterMs,
    });
  };
}

function sendJSON(res, status, body) {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.end(JSON.stringify(body));
}
