// RateLimiterClient and the Express-style middleware against the real Go
// server (test-support/real-server.js): 429 handling and Retry-After, a
// timeout, and a server that is down.

import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { RateLimiterClient, RateLimiterError } from '../src/client.js';
import { rateLimit } from '../src/express.js';
import { startServer } from '../test-support/real-server.js';

const CONFIG = `namespaces:
  - name: orders
    limits:
      - name: per-10h
        algorithm: token_bucket
        limit: 3
        period: 10h
`;

/** An app behind the middleware; resolves with its URL and a hit counter. */
async function app(t, client, onError) {
  const hits = { n: 0 };
  const mw = rateLimit({ client, namespace: 'orders', subject: (req) => req.headers['x-user-id'], onError });
  const server = http.createServer((req, res) => {
    mw(req, res, (err) => {
      if (err) {
        res.statusCode = 500;
        res.end(String(err));
        return;
      }
      hits.n++;
      res.end('order placed\n');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return { url: `http://127.0.0.1:${server.address().port}/orders`, hits };
}

test('against the real server', async (t) => {
  const { baseUrl, stop } = await startServer(t, CONFIG);

  await t.test('the client: allowed, then 429 with retryAfterMs', async () => {
    const client = new RateLimiterClient({ baseUrl, timeoutMs: 30_000 });
    for (let i = 0; i < 3; i++) {
      const d = await client.check({ namespace: 'orders', subject: 'alice' });
      assert.equal(d.allowed, true);
      assert.equal(d.limits[0].remaining, 2 - i);
    }
    const denied = await client.check({ namespace: 'orders', subject: 'alice' });
    assert.equal(denied.allowed, false);
    assert.equal(denied.status, 429);
    assert.ok(denied.retryAfterMs > 0 && denied.retryAfterMs <= 12_000_000);
    await assert.rejects(client.check({ namespace: 'payments', subject: 'alice' }), (err) => err instanceof RateLimiterError && err.status === 404);
  });

  await t.test('the middleware: the app runs until the limit, then 429 with Retry-After', async () => {
    const client = new RateLimiterClient({ baseUrl, timeoutMs: 30_000 });
    const { url, hits } = await app(t, client, 'closed');
    for (let i = 0; i < 3; i++) {
      const res = await fetch(url, { headers: { 'x-user-id': 'bob' } });
      assert.equal(res.status, 200);
      await res.text();
    }
    const res = await fetch(url, { headers: { 'x-user-id': 'bob' } });
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    await res.text();
    assert.equal(hits.n, 3);
  });

  await t.test('a server that does not answer: TIMEOUT', async (tt) => {
    const sockets = new Set();
    const silent = net.createServer((socket) => sockets.add(socket)); // accepts, never answers
    await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
    tt.after(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const client = new RateLimiterClient({ baseUrl: `http://127.0.0.1:${silent.address().port}`, timeoutMs: 50 });
    await assert.rejects(client.check({ namespace: 'orders', subject: 'carol' }), { code: 'TIMEOUT' });
  });

  await t.test('the server down: NETWORK; the middleware fails open or closed as told', async () => {
    const client = new RateLimiterClient({ baseUrl, timeoutMs: 30_000 });
    const open = await app(t, client, 'open');
    const closed = await app(t, client, 'closed');
    await stop();
    await assert.rejects(client.check({ namespace: 'orders', subject: 'dave' }), { code: 'NETWORK' });
    const r1 = await fetch(open.url, { headers: { 'x-user-id': 'dave' } });
    assert.equal(r1.status, 200);
    await r1.text();
    const r2 = await fetch(closed.url, { headers: { 'x-user-id': 'dave' } });
    assert.equal(r2.status, 503);
    await r2.text();
    assert.equal(open.hits.n, 1);
    assert.equal(closed.hits.n, 0);
  });
});
