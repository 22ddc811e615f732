// The fixture README's "recipe" weights (tests/../shared/fixtures/metrics/README.md):
// backbone tensors that are not shipped, regenerated bit for bit from their names with
// a 32-bit integer hash, so tests can build the reference networks without downloads.

/** The README's hash32 (a 32-bit avalanche mix). */
function hash32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** n values uniform in [-scale, scale) (+ offset), keyed by the tensor's name (FNV-1a), in f32 as the fixture made them. */
export function recipe(name: string, n: number, scale: number, offset = 0): Float32Array {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  const key = hash32(h);
  const [s, o] = [Math.fround(scale), Math.fround(offset)];
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const w = Math.fround(Math.fround(2 * ((hash32((hash32(i) ^ key) >>> 0) >>> 8) / 16777216) - 1) * s);
    out[i] = offset === 0 ? w : Math.fround(o + w);
  }
  return out;
}
