// The real Go server for the JavaScript tests: builds cmd/ratelimiter from
// this repository (a Go toolchain on PATH is required: without it the test
// fails with what to install, never skips), starts `ratelimiter serve` on a
// free loopback port with the given configuration, and stops that process
// (by its handle) when the test ends, or when the test asks.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/**
 * @param {import('node:test').TestContext} t
 * @param {string} config the YAML configuration
 * @returns {Promise<{baseUrl: string, stop: () => Promise<void>}>}
 */
export async function startServer(t, config) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rl-js-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'ratelimiter');
  const build = spawnSync('go', ['build', '-o', bin, './cmd/ratelimiter'], { cwd: repoRoot, encoding: 'utf8' });
  assert.ok(!build.error && build.status === 0, `building the server needs Go on PATH (go.mod names the version): ${build.error ?? build.stderr}`);
  const cfg = path.join(dir, 'config.yaml');
  writeFileSync(cfg, config);
  const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--log-format', 'json', '--config', cfg], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  t.after(stop);
  const baseUrl = await new Promise((resolve, reject) => {
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
    exited.then((code) => reject(new Error(`the server exited with ${code}: ${buf}`)));
  });
  return { baseUrl, stop };
}
