// Seeded random weights for real-sized models without a checkpoint: the values do
// not matter for timing, their magnitudes do (finite activations in f16, no
// denormal slow paths on CPU adapters).
import type { Engine } from '../src/engine/engine.js';
import { f32ToF16Bits } from '../src/engine/half.js';
import { RowChunkedTensor, Tensor, type DType } from '../src/engine/tensor.js';
import { weightChanged } from '../src/engine/textures.js';
import { uploadWeight, type Module } from '../src/graph/module.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../src/graph/nn.js';
import type { LazyTensorToWrite } from '../src/weights/safetensors.js';
import { rand } from './timing.js';

const POOL = 1 << 20;
const pools = new Map<string, Float32Array | Uint16Array>();

/** POOL + 1021 random values of uniform(±scale), cached per scale and dtype. */
function pool(scale: number, dtype: DType): Float32Array | Uint16Array {
  const key = `${scale}|${dtype}`;
  let p = pools.get(key);
  if (!p) {
    const values = rand(POOL + 1021, 7 + pools.size, scale);
    p = dtype === 'f16' ? Uint16Array.from(values, f32ToF16Bits) : values;
    pools.set(key, p);
  }
  return p;
}

function constant(n: number, value: number, dtype: DType): Float32Array | Uint16Array {
  return dtype === 'f16' ? new Uint16Array(n).fill(f32ToF16Bits(value)) : new Float32Array(n).fill(value);
}

/** n values tiled from the pool of this scale, starting at a per-param offset. */
function tiled(n: number, scale: number, dtype: DType, seed: number): Float32Array | Uint16Array {
  const src = pool(scale, dtype);
  const out = dtype === 'f16' ? new Uint16Array(n) : new Float32Array(n);
  const start = (seed * 7919) % 1021;
  for (let off = 0; off < n; off += POOL) out.set(src.subarray(start, start + Math.min(POOL, n - off)), off);
  return out;
}

/**
 * Fills every GPU param of `root` whose checkpoint name passes `want` (default: all)
 * like PyTorch's default initialisation: norm weights 1 and biases 0, Linear and Conv
 * uniform(±1/√fan_in), anything else (embeddings, class tokens) uniform(±0.02).
 * Host params (CLIP's logit_scale) get 4.6. Tables larger than one binding become
 * row chunks. Returns the bytes uploaded.
 */
export function randomizeParams(e: Engine, root: Module, dtype: DType, want: (name: string) => boolean = () => true): number {
  let bytes = 0;
  let seed = 0;
  for (const [path, m] of root.modules()) {
    for (const [local, p] of m.ownParams()) {
      const name = `${path}${local}`;
      if (p.host) {
        p.value = Float32Array.of(4.6);
        continue;
      }
      if (!want(name)) continue;
      const values = randomValues(m, local, p.shape, dtype, seed++);
      p.value = uploadWeight(e, new Uint8Array(values.buffer), p.shape, dtype);
      bytes += values.byteLength;
    }
  }
  return bytes;
}

/** One param's values by randomizeParams' rule (`local`: its name in module m). */
function randomValues(m: Module, local: string, shape: readonly number[], dtype: DType, seed: number): Float32Array | Uint16Array {
  const n = shape.reduce((a, b) => a * b, 1);
  if (m instanceof LayerNorm || m instanceof GroupNorm) return constant(n, local === 'weight' ? 1 : 0, dtype);
  if (m instanceof Linear || m instanceof Conv2d) {
    const fanIn = m instanceof Linear ? m.inFeatures : m.weight.shape.slice(1).reduce((a, d) => a * d, 1);
    return tiled(n, Math.fround(1 / Math.sqrt(fanIn)), dtype, seed);
  }
  return tiled(n, 0.02, dtype, seed);
}

/**
 * The GPU params of `root` as f32 checkpoint tensors with randomizeParams' values, each made
 * only when written (an SD 1.5-sized checkpoint on disk without holding it in host memory).
 */
export function randomCheckpoint(root: Module): LazyTensorToWrite[] {
  const out: LazyTensorToWrite[] = [];
  for (const [path, m] of root.modules()) {
    for (const [local, p] of m.ownParams()) {
      if (p.host) continue;
      const seed = out.length;
      out.push({ name: `${path}${local}`, dtype: 'F32', shape: [...p.shape], read: () => randomValues(m, local, p.shape, 'f32', seed) });
    }
  }
  return out;
}

/** Destroys the GPU buffers of the params `want` selects (between benchmarks). */
export function freeParams(root: Module, want: (name: string) => boolean = () => true): void {
  for (const [name, p] of root.namedParams()) {
    if (!want(name)) continue;
    const v = p.value;
    for (const t of v instanceof Tensor ? [v] : v instanceof RowChunkedTensor ? v.chunks.map((c) => c.tensor) : []) {
      if (t.hasBuffer) t.buffer.destroy(); // on the CPU path a Linear/conv weight may be held only as its texture
      for (const texture of weightChanged(t)) texture.destroy();
    }
    p.value = undefined;
  }
}

