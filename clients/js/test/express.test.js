// The middleware in front of a plain node:http application (Express's req/res
// extend these), talking to the service double over real HTTP.

import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { rateLimit, bindingLimit } from '../src/express.js';
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
    { name: 'per-minute', algorithm: 'fixed_window', limit: 3, period: '1m' },
  ],
  counter: [{ name: 'per-minute', algorithm: 'sliding_window_counter', limit: 10, period: '1m' }],
};

/** An application server: the middleware, then a handler answering 200 "ok". */
async function app(t, middleware) {
  const seen = { handled: 0, errors: [] };
  const server = http.createServer((req, res) => {
    middleware(req, res, (err) => {
      if (err) {
        seen.errors.push(err);
        res.statusCode = 500;
        res.end('error');
        return;
      }
      seen.handled++;
      res.end(`ok ${req.rateLimit ? req.rateLimit.limits.length : '-'}`);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address();
  const get = async (path = '/', headers = {}) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
    return { status: res.status, headers: res.headers, body: await res.text() };
  };
  return { get, seen };
}

async function setup(t, options = {}) {
  const clock = manualClock(1_700_000_040n * NS.s); // on a minute boundary
  const svc = await startService({ namespaces, clock });
  t.after(() => svc.close());
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  const mw = rateLimit({
    client,
    namespace: 'orders',
    subject: (req) => req.headers['x-user-id'] ?? 'anonymous',
    ...options,
  });
  return { ...(await app(t, mw)), svc, clock, client };
}

test('allowed requests pass with X-RateLimit headers; the 6th gets 429 and Retry-After 7200', async (t) => {
  const { get, seen, svc } = await setup(t);
  for (let i = 4; i >= 0; i--) {
    const r = await get('/', { 'x-user-id': 'alice' });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'ok 1');
    assert.equal(r.headers.get('x-ratelimit-limit'), '5');
    assert.equal(r.headers.get('x-ratelimit-remaining'), String(i));
    assert.equal(r.headers.get('x-ratelimit-reset'), String((5 - i) * 7200));
    assert.equal(r.headers.get('retry-after'), null);
  }
  const r = await get('/', { 'x-user-id': 'alice' });
  assert.equal(r.status, 429);
  assert.equal(r.headers.get('retry-after'), '7200');
  assert.equal(r.headers.get('x-ratelimit-remaining'), '0');
  assert.equal(r.headers.get('x-ratelimit-reset'), '36000');
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(JSON.parse(r.body), { error: 'rate limit exceeded', retry_after_ms: 7_200_000 });
  assert.equal(seen.handled, 5);
  // Other users are limited separately.
  assert.equal((await get('/', { 'x-user-id': 'bob' })).status, 200);
  assert.deepEqual(JSON.parse(svc.requests.at(-1).body), { namespace: 'orders', subject: 'bob', cost: 1 });
});

test('Retry-After is whole seconds rounded up, at least 1, and absent for "never"', async (t) => {
  const { get, clock } = await setup(t, {
    namespace: 'counter',
    cost: (req) => Number(req.headers['x-cost'] ?? 1),
  });
  // 10 per minute, sliding counter; the window starts at the clock's minute.
  // 6 at +10s, 4 at +30s, then at +40s a unit must wait 20s + 1ns for the
  // next window (see the Go timeline): 20001 ms rounded up -> 21 s.
  clock.advance(10n * NS.s);
  assert.equal((await get('/', { 'x-cost': '6' })).status, 200);
  clock.advance(20n * NS.s);
  assert.equal((await get('/', { 'x-cost': '4' })).status, 200);
  clock.advance(10n * NS.s);
  let r = await get('/');
  assert.equal(r.status, 429);
  assert.equal(JSON.parse(r.body).retry_after_ms, 20_001);
  assert.equal(r.headers.get('retry-after'), '21');
  // 1ns short of it: the service rounds 1ns up to 1 ms, the header to 1 s.
  clock.advance(20n * NS.s);
  r = await get('/');
  assert.equal(r.status, 429);
  assert.equal(JSON.parse(r.body).retry_after_ms, 1);
  assert.equal(r.headers.get('retry-after'), '1');
  // Cost above the capacity: never passes, so no Retry-After.
  r = await get('/', { 'x-cost': '11' });
  assert.equal(r.status, 429);
  assert.equal(r.headers.get('retry-after'), null);
  assert.deepEqual(JSON.parse(r.body), { error: 'request exceeds the rate limit capacity', retry_after_ms: -1 });
  assert.equal(r.headers.get('x-ratelimit-limit'), '10');
});

test('headers describe the most restrictive limit', async (t) => {
  const { get } = await setup(t, { namespace: 'search' });
  // per-second: 10 (remaining 9), per-minute: 3 (remaining 2): the minute binds.
  let r = await get('/');
  assert.equal(r.headers.get('x-ratelimit-limit'), '3');
  assert.equal(r.headers.get('x-ratelimit-remaining'), '2');
  assert.equal(r.headers.get('x-ratelimit-reset'), '60');
  await get('/');
  await get('/');
  // Denied by the minute window: its limit is reported, not the second's.
  r = await get('/');
  assert.equal(r.status, 429);
  assert.equal(r.headers.get('x-ratelimit-limit'), '3');
  assert.equal(r.headers.get('x-ratelimit-remaining'), '0');
  assert.equal(r.headers.get('retry-after'), '60');
});

test('service errors: onError "open" lets requests through, "closed" answers 503', async (t) => {
  const failing = {
    check: async () => {
      throw new RateLimiterError('down', { code: 'NETWORK' });
    },
  };
  const errors = [];
  const open = await app(t, rateLimit({ client: failing, namespace: 'orders', subject: () => 'u', onServiceError: (e) => errors.push(e) }));
  const r1 = await open.get('/');
  assert.equal(r1.status, 200);
  assert.equal(r1.body, 'ok -');
  assert.equal(r1.headers.get('x-ratelimit-limit'), null);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'NETWORK');

  const closed = await app(t, rateLimit({ client: failing, namespace: 'orders', subject: () => 'u', onError: 'closed' }));
  const r2 = await closed.get('/');
  assert.equal(r2.status, 503);
  assert.deepEqual(JSON.parse(r2.body), { error: 'rate limiter unavailable' });
  assert.equal(closed.seen.handled, 0);
});

test('service errors from a real service: unknown namespace, unreachable service', async (t) => {
  const { svc } = await setup(t);
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  const closed = await app(t, rateLimit({ client, namespace: 'missing', subject: () => 'u', onError: 'closed' }));
  assert.equal((await closed.get('/')).status, 503);
  const open = await app(t, rateLimit({ client, namespace: 'missing', subject: () => 'u', onError: 'open' }));
  assert.equal((await open.get('/')).status, 200);
});

test("a throwing or invalid subject/cost function goes to next(err), not to the service", async (t) => {
  const { svc } = await setup(t);
  const client = new RateLimiterClient({ baseUrl: svc.baseUrl, timeoutMs: PATIENT });
  const before = svc.requests.length;
  const a = await app(t, rateLimit({ client, namespace: 'orders', subject: () => { throw new Error('no user'); } }));
  assert.equal((await a.get('/')).status, 500);
  assert.equal(a.seen.errors[0].message, 'no user');
  const b = await app(t, rateLimit({ client, namespace: 'orders', subject: () => '' }));
  assert.equal((await b.get('/')).status, 500);
  assert.ok(b.seen.errors[0] instanceof TypeError);
  const c = await app(t, rateLimit({ client, namespace: 'orders', subject: () => 'u', cost: () => -2 }));
  assert.equal((await c.get('/')).status, 500);
  assert.equal(svc.requests.length, before);
});

test('works with minimal fakes of req/res too', async () => {
  const decision = {
    allowed: false,
    retryAfterMs: 1500,
    limits: [
      { name: 'a', limit: 10, remaining: 4, resetAfterMs: 400, retryAfterMs: 0 },
      { name: 'b', limit: 3, remaining: 0, resetAfterMs: 2500, retryAfterMs: 1500 },
    ],
  };
  const calls = [];
  const client = { check: async (r) => (calls.push(r), decision) };
  const mw = rateLimit({ client, namespace: 'ns', subject: (req) => req.user.id, cost: (req) => req.cost });
  const headers = {};
  const res = {
    statusCode: 200,
    headersSent: false,
    setHeader: (k, v) => (headers[k.toLowerCase()] = v),
    end(body) {
      this.body = body;
    },
  };
  let nexts = 0;
  await mw({ user: { id: 'u7' }, cost: 2 }, res, () => nexts++);
  assert.deepEqual(calls, [{ namespace: 'ns', subject: 'u7', cost: 2 }]);
  assert.equal(nexts, 0);
  assert.equal(res.statusCode, 429);
  assert.equal(headers['retry-after'], '2');
  assert.equal(headers['x-ratelimit-limit'], '3');
  assert.equal(headers['x-ratelimit-remaining'], '0');
  assert.equal(headers['x-ratelimit-reset'], '3');
  assert.deepEqual(JSON.parse(res.body), { error: 'rate limit exceeded', retry_after_ms: 1500 });
});

test('bindingLimit mirrors the Go Binding rule', () => {
  const l = (name, remaining, retryAfterMs) => ({ name, limit: 10, remaining, resetAfterMs: 0, retryAfterMs });
  // Allowed: the fewest remaining, the first on ties.
  assert.equal(bindingLimit({ allowed: true, limits: [l('a', 5, 0), l('b', 2, 0), l('c', 2, 0)] }).name, 'b');
  // Denied: the longest wait among the denying limits; "never" (-1) wins.
  assert.equal(bindingLimit({ allowed: false, limits: [l('a', 0, 0), l('b', 0, 500), l('c', 0, 900)] }).name, 'c');
  assert.equal(bindingLimit({ allowed: false, limits: [l('a', 3, 0), l('b', 0, 500), l('c', 0, -1), l('d', 0, 900)] }).name, 'c');
  assert.equal(bindingLimit({ allowed: false, limits: [l('a', 3, -1), l('b', 0, -1)] }).name, 'a');
  assert.equal(bindingLimit({ allowed: true, limits: [] }), undefined);
});

test('rateLimit: option checks', () => {
  const client = { check: async () => ({}) };
  assert.throws(() => rateLimit({ namespace: 'n', subject: () => 'u' }), TypeError);
  assert.throws(() => rateLimit({ client, subject: () => 'u' }), TypeError);
  assert.throws(() => rateLimit({ client, namespace: 'n' }), TypeError);
  assert.throws(() => rateLimit({ client, namespace: 'n', subject: () => 'u', onError: 'maybe' }), TypeError);
  assert.throws(() => rateLimit({ client, namespace: 'n', subject: () => 'u', cost: 3 }), TypeError);
});
