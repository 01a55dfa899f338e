// BatchingClient against the real Go server: this test builds
// cmd/ratelimiter from the repository (a Go toolchain on PATH is required,
// as for the conformance test: without it the test fails with what to
// install, never skips), starts `ratelimiter serve` on a free loopback
// port, and stops that process when done.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BatchingClient, RateLimiterError } from '../src/client.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const CONFIG = `namespaces:
  - name: orders
    limits:
      - name: per-10h
        algorithm: token_bucket
        limit: 5
        period: 10h
`;

/** Builds and starts the server; resolves with its base URL. */
async function startServer(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rl-js-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'ratelimiter');
  const build = spawnSync('go', ['build', '-o', bin, './cmd/ratelimiter'], { cwd: repoRoot, encoding: 'utf8' });
  assert.ok(!build.error && build.status === 0, `building the server needs Go on PATH (go.mod names the version): ${build.error ?? build.stderr}`);
  const cfg = path.join(dir, 'config.yaml');
  writeFileSync(cfg, CONFIG);
  const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--log-format', 'json', '--config', cfg], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(() => proc.kill('SIGKILL')); // the process this test started, by its handle
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      buf += chunk;
      for (const line of buf.split('\n')) {
        try {
          const rec = JSON.parse(line);
          if (rec.msg === 'listening' && rec.addr) resolve(`http://${rec.addr}`);
        } catch {
          // a partial line
        }
      }
    });
    proc.on('exit', (code) => reject(new Error(`the server exited with ${code}: ${buf}`)));
  });
}

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
  const baseUrl = await startServer(t);

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
