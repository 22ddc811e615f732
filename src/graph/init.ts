// Fresh weights for new layers, on the host: PyTorch's default initialisation
// (Linear/Conv: U(±1/√fan_in) for weight and bias; norms: weight 1, bias 0) from
// a seeded generator, so `dr init` writes the same checkpoint every time.
import type { Module } from './module.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from './nn.js';

/** mulberry32: small, fast, and identical on every platform. */
export function seededUniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal values by Box–Muller from the seeded generator (latent noise). */
export function seededNormal(n: number, seed: number): Float32Array {
  const u = seededUniform(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const a = 2 * Math.PI * u();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

export interface HostParam {
  shape: number[];
  values: Float32Array;
}

/** Host values for every param of `root`, keyed by checkpoint name. */
export function defaultInit(root: Module, seed: number, prefix = ''): Map<string, HostParam> {
  const u = seededUniform(seed);
  const out = new Map<string, HostParam>();
  for (const [path, m] of root.modules(prefix)) {
    for (const [name, p] of m.ownParams()) {
      const n = p.shape.reduce((a, d) => a * d, 1);
      const values = new Float32Array(n);
      if (m instanceof LayerNorm || m instanceof GroupNorm) {
        if (name === 'weight') values.fill(1);
      } else if (m instanceof Linear || m instanceof Conv2d) {
        const fanIn = m instanceof Linear ? m.inFeatures : m.weight.shape.slice(1).reduce((a, d) => a * d, 1);
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < n; i++) values[i] = (u() * 2 - 1) * bound;
      } else {
        throw new Error(`defaultInit: no rule for param ${path}${name} of ${m.constructor.name}`);
      }
      out.set(`${path}${name}`, { shape: [...p.shape], values });
    }
  }
  return out;
}
