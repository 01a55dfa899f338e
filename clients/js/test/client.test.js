// RateLimiterClient against a real node:http server on 127.0.0.1 that speaks
// the service's protocol (test-support/service.js). No sleeps: the server's
// limiter runs on a manual clock.

import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { RateLimiterClient, RateLimiterError } from '../src/client.js';
import { NS } from '../src/limit.js';
import { startService, manualClock } from '../test-support/service.js';

// Generous: `node --test` runs files in parallel (and the conformance test
// compiles Go), so a loaded machine must not turn a slow answer into a timeout.
const PATIENT = 30_000;

const namespaces = {
  orders: [{ name: 'per-10h', algorithm: 'token_bucket', limit: 5, period: '10h' }],
  search: [
    { name: 'per-second', algorithm: 'token_bucket', limit: 10, period: '1s' },
    { name: 'per-minute', algorithm: 'fixed_window', limit: 2, period: '1m' },
  ],
};

/** Starts a service double for one test and closes it afterwards. */
async function service(t, options = {}) {
  const clock = manualClock(1_700_000_040n * NS.s); // on a minute boundary
  const svc = await startService({ namespaces, clock, ...options });
  t.after(() => svc.close());
  return { ...svc, clock };
}

test('check: allowed decisions, then a 429 decision with retry_after_ms', async (t) => {
  const svc = await service(t);
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  for (let i = 4; i >= 0; i--) {
    const d = await client.check({ namespace: 'orders', subject: 'user-1' });
    assert.equal(d.allowed, true);
    assert.equal(d.status, 200);
    assert.equal(d.namespace, 'orders');
    assert.equal(d.subject, 'user-1');
    assert.equal(d.retryAfterMs, 0);
    assert.equal(d.decidedBy, 'store');
    assert.deepEqual(d.limits, [
      { name: 'per-10h', limit: 5, remaining: i, resetAfterMs: (5 - i) * 2 * 3600_000, retryAfterMs: 0, periodMs: 36_000_000 },
    ]);
  }
  const denied = await client.check({ namespace: 'orders', subject: 'user-1' });
  assert.equal(denied.allowed, false);
  assert.equal(denied.status, 429);
  assert.equal(denied.retryAfterMs, 7_200_000); // 2h
  assert.equal(denied.limits[0].remaining, 0);

  // What went over the wire.
  const last = svc.requests.at(-1);
  assert.equal(last.method, 'POST');
  assert.equal(last.url, '/v1/check');
  assert.match(last.headers['content-type'], /^application\/json/);
  assert.deepEqual(JSON.parse(last.body), { namespace: 'orders', subject: 'user-1', cost: 1 });

  // Time passes on the service's clock: one token is back after 2h.
  svc.clock.advance(2n * NS.h);
  assert.equal((await client.check({ namespace: 'orders', subject: 'user-1' })).allowed, true);
});

test('check: cost, peeks, cost above capacity, several limits', async (t) => {
  const svc = await service(t);
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl + '/', timeoutMs: PATIENT }); // a trailing slash is fine
  const peek = await client.check({ namespace: 'orders', subject: 'u', cost: 0 });
  assert.equal(peek.allowed, true);
  assert.equal(peek.limits[0].remaining, 5);
  const big = await client.check({ namespace: 'orders', subject: 'u', cost: 6 });
  assert.equal(big.allowed, false);
  assert.equal(big.retryAfterMs, -1);
  assert.deepEqual(JSON.parse(svc.requests.at(-1).body).cost, 6);

  await client.check({ namespace: 'search', subject: 'u' });
  await client.check({ namespace: 'search', subject: 'u' });
  const third = await client.check({ namespace: 'search', subject: 'u' });
  assert.equal(third.allowed, false);
  assert.equal(third.retryAfterMs, 60_000); // the minute window ends
  assert.deepEqual(
    third.limits.map((l) => [l.name, l.remaining, l.retryAfterMs]),
    [
      ['per-second', 8, 0], // would have passed: reported unconsumed
      ['per-minute', 0, 60_000],
    ],
  );
});

test('check: 404 and 400 answers throw RateLimiterError with the status and message', async (t) => {
  const svc = await service(t, {
    intercept: (req, res, body) => {
      if (JSON.parse(body || '{}').subject !== 'bad') return false;
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'subject: too long' }));
      return true;
    },
  });
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  await assert.rejects(client.check({ namespace: 'nope', subject: 'u' }), (err) => {
    assert.ok(err instanceof RateLimiterError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'HTTP_STATUS');
    assert.equal(err.message, 'unknown namespace "nope"');
    return true;
  });
  await assert.rejects(client.check({ namespace: 'orders', subject: 'bad' }), { name: 'RateLimiterError', status: 400, message: 'subject: too long' });
});

test('check: 413 and non-JSON error bodies', async (t) => {
  let mode = '413';
  const svc = await service(t, {
    intercept: (req, res) => {
      if (mode === '413') {
        res.writeHead(413, { 'content-type': 'application/json' });
        res.end('{"error":"request body too large"}');
      } else if (mode === '502') {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<html>Bad Gateway</html>');
      } else if (mode === 'proxy429') {
        res.writeHead(429, { 'content-type': 'text/plain' });
        res.end('Too Many Requests');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"allowed": false}'); // inconsistent with the status
      }
      return true;
    },
  });
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  const req = { namespace: 'orders', subject: 'u' };
  await assert.rejects(client.check(req), { status: 413, code: 'HTTP_STATUS', message: 'request body too large' });
  mode = '502';
  await assert.rejects(client.check(req), { status: 502, code: 'HTTP_STATUS', message: 'rate limiter: HTTP 502: <html>Bad Gateway</html>' });
  mode = 'proxy429';
  await assert.rejects(client.check(req), { status: 429, code: 'BAD_RESPONSE' });
  mode = 'mismatch';
  await assert.rejects(client.check(req), { status: 200, code: 'BAD_RESPONSE' });
});

test('check: a service that does not answer times out (AbortController)', async (t) => {
  const hung = [];
  const svc = await service(t, {
    intercept: (req, res) => {
      hung.push(res); // never answered; closed by svc.close()
      return true;
    },
  });
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: 50 });
  await assert.rejects(client.check({ namespace: 'orders', subject: 'u' }), (err) => {
    assert.ok(err instanceof RateLimiterError);
    assert.equal(err.code, 'TIMEOUT');
    assert.equal(err.status, 0);
    assert.match(err.message, /50 ms/);
    return true;
  });
  // (Whether the request reached the server before the 50 ms ran out
  // depends on the machine's load, so it is not asserted.)
  assert.ok(hung.length <= 1);

  // A caller's own signal cancels too.
  const controller = new AbortController();
  const pending = client.check({ namespace: 'orders', subject: 'u' }, { signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, { code: 'ABORTED' });
});

test('check: connection refused is a NETWORK error', async () => {
  // Find a port that nobody listens on: bind one, then close it.
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  const client = new RateLimiterClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: PATIENT });
  await assert.rejects(client.check({ namespace: 'orders', subject: 'u' }), { name: 'RateLimiterError', code: 'NETWORK', status: 0 });
});

test('client: argument checks', async () => {
  assert.throws(() => new RateLimiterClient({}), TypeError);
  assert.throws(() => new RateLimiterClient({ baseUrl: 'not a url' }), TypeError);
  assert.throws(() => new RateLimiterClient({ baseUrl: 'http://x', timeoutMs: 0 }), TypeError);
  const client = new RateLimiterClient({ baseUrl: 'http://127.0.0.1:1/base/' });
  assert.equal(client.url, 'http://127.0.0.1:1/base/v1/check');
  await assert.rejects(client.check({ namespace: '', subject: 'u' }), TypeError);
  await assert.rejects(client.check({ namespace: 'n', subject: 42 }), TypeError);
  await assert.rejects(client.check({ namespace: 'n', subject: 'u', cost: -1 }), TypeError);
  await assert.rejects(client.check({ namespace: 'n', subject: 'u', cost: 1.5 }), TypeError);
});
