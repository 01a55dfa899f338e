// BatchingClient against the real Go server (test-support/real-server.js:
// built from this repository, started on a free loopback port, stopped
// when done).

import test from 'node:test';
import assert from 'node:assert/strict';
import { BatchingClient, RateLimiterError } from '../src/client.js';
import { startServer } from '../test-support/real-server.js';

const CONFIG = `namespaces:
  - name: orders
    limits:
      - name: per-10h
        algorithm: token_bucket
        limit: 5
        period: 10h
`;

/** fetch that counts its calls. */
function countingFetch() {
  const f = (...args) => {
    f.calls++;
    return globalThis.fetch(...args);
  };
  f.calls = 0;
  return f;
}

test('BatchingClient against the real server', async (t) => {
  const { baseUrl } = await startServer(t, CONFIG);

  await t.test('800 concurrent checks of 8 subjects: exactly 5 admitted each, in far fewer requests', async () => {
    const fetch = countingFetch();
    const client = new BatchingClient({ baseUrl, fetch, timeoutMs: 30_000 });
    const results = await Promise.all(
      Array.from({ length: 800 }, (_, i) => client.check({ namespace: 'orders', subject: `user-${i % 8}` })),
    );
    const admitted = {};
    for (const r of results) {
      assert.equal(r.status, r.allowed ? 200 : 429);
      if (r.allowed) admitted[r.subject] = (admitted[r.subject] ?? 0) + 1;
      else assert.ok(r.retryAfterMs > 0);
    }
    assert.deepEqual(Object.values(admitted), [5, 5, 5, 5, 5, 5, 5, 5]);
    assert.ok(fetch.calls <= 800 / 4, `${fetch.calls} requests for 800 checks`);
  });

  await t.test('a check the service cannot decide rejects alone', async () => {
    const client = new BatchingClient({ baseUrl, timeoutMs: 30_000 });
    const [ok, unknown, peek] = await Promise.allSettled([
      client.check({ namespace: 'orders', subject: 'fresh' }),
      client.check({ namespace: 'payments', subject: 'fresh' }),
      client.check({ namespace: 'orders', subject: 'fresh', cost: 0 }),
    ]);
    assert.equal(ok.status, 'fulfilled');
    assert.equal(ok.value.limits[0].remaining, 4);
    assert.equal(unknown.status, 'rejected');
    assert.ok(unknown.reason instanceof RateLimiterError);
    assert.equal(unknown.reason.status, 404);
    assert.equal(peek.status, 'fulfilled');
    assert.equal(peek.value.limits[0].remaining, 4);
  });

  await t.test('an aborted check is not sent', async () => {
    const fetch = countingFetch();
    const client = new BatchingClient({ baseUrl, fetch });
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(client.check({ namespace: 'orders', subject: 'a' }, { signal: controller.signal }), { code: 'ABORTED' });
    assert.equal(fetch.calls, 0);
  });
});
