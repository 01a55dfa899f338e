// A test double of the rate limiter service's HTTP API: a real node:http
// server on 127.0.0.1 (port 0) that answers POST /v1/check like the Go
// service, deciding with this package's reference InMemoryLimiter and an
// injected clock. The Go service has its own end-to-end tests; this one only
// has to speak the same protocol.

import http from 'node:http';
import { InMemoryLimiter, NS, RETRY_NEVER } from '../src/limit.js';

const MAX_BODY = 4096;

/** ns -> ms rounded up (a wait must never be reported shorter than it is). */
function ms(ns) {
  if (ns === RETRY_NEVER) return -1;
  return Number((ns + NS.ms - 1n) / NS.ms);
}

/**
 * @param {object} options
 * @param {Record<string, object[]>} options.namespaces namespace -> rules
 * @param {() => bigint} options.clock
 * @param {(req: http.IncomingMessage, res: http.ServerResponse) => boolean} [options.intercept]
 *   answers a request itself when it returns true (error statuses, hangs)
 */
export async function startService({ namespaces, clock, intercept }) {
  const limiters = new Map();
  for (const [name, rules] of Object.entries(namespaces)) {
    limiters.set(name, new InMemoryLimiter({ rules, clock }));
  }
  const requests = [];

  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) tooLarge = true;
      else chunks.push(c);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      if (intercept?.(req, res, body)) return;
      if (req.method !== 'POST' || req.url !== '/v1/check') return send(res, 404, { error: 'not found' });
      if (tooLarge) return send(res, 413, { error: 'request body too large' });
      let r;
      try {
        r = JSON.parse(body);
      } catch {
        return send(res, 400, { error: 'invalid JSON' });
      }
      if (typeof r.namespace !== 'string' || typeof r.subject !== 'string' || r.subject === '') {
        return send(res, 400, { error: 'namespace and subject are required' });
      }
      const cost = r.cost ?? 1;
      if (!Number.isSafeInteger(cost) || cost < 0) return send(res, 400, { error: 'cost must be a whole number >= 0' });
      const limiter = limiters.get(r.namespace);
      if (!limiter) return send(res, 404, { error: `unknown namespace "${r.namespace}"` });

      const v = limiter.check(r.subject, cost);
      send(res, v.allowed ? 200 : 429, {
        allowed: v.allowed,
        namespace: r.namespace,
        subject: r.subject,
        retry_after_ms: ms(v.retryAfter),
        delay_ms: ms(v.delay),
        decided_by: 'store',
        limits: v.decisions.map((d, i) => ({
          name: limiter.rules[i].name,
          limit: Number(d.limit),
          remaining: Number(d.remaining),
          reset_after_ms: ms(d.resetAfter),
          retry_after_ms: ms(d.retryAfter),
          period_ms: ms(limiter.rules[i].period),
        })),
      });
    });
  });

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A clock for tests: returns `now`, which the test moves. */
export function manualClock(start = 1_700_000_000n * NS.s) {
  const clock = () => clock.now;
  clock.now = start;
  clock.advance = (ns) => {
    clock.now += ns;
  };
  return clock;
}
