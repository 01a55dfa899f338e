// A small seeded PRNG (xorshift32) so that randomized tests are reproducible:
// the same seed always yields the same scenario.

export class Prng {
  /** @param {number} seed any non-zero 32-bit integer */
  constructor(seed) {
    this.x = seed >>> 0 || 0x9e3779b9;
  }

  /** The next 32-bit unsigned integer. */
  next() {
    let x = this.x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.x = x;
    return x;
  }

  /** An integer in [0, n), for n <= 2^32. */
  int(n) {
    return Math.floor((this.next() / 2 ** 32) * n);
  }

  /** A BigInt in [lo, hi] (inclusive), uniform enough for tests. */
  big(lo, hi) {
    const span = hi - lo + 1n;
    const r = (BigInt(this.next()) << 32n) | BigInt(this.next());
    return lo + (r % span);
  }

  /** True with probability p. */
  chance(p) {
    return this.next() / 2 ** 32 < p;
  }

  /** A random element of arr. */
  pick(arr) {
    return arr[this.int(arr.length)];
  }
}
