// C[b] = act(op(A[b]) · op(B[b]) + bias), f32 accumulation.
// A: [batch, M, K] row-major, or [batch, K, M] when TRANS_A (the Linear weight gradient
// dYᵀ·X reads dY in place). B: [N, K] when TRANS_B (a PyTorch Linear weight), else
// [K, N]. A batch stride of 0 broadcasts an operand (one weight for all items).
// Workgroup z = split·batch + item: a split sums K from split·kChunk on (kChunk a multiple
// of TILE_K) into its own C[split] (no bias or activation then; column_sum adds the splits).
// 64×64 output tile per workgroup, 8×8 threads computing 8×8 outputs each (rows
// lid.y·4 + 32i, columns lid.x·4 + 32j, i, j ∈ {0, 1}) from vec4 rows of the shared
// tiles. Defines: TRANS_A, TRANS_B. The epilogue (hasBias, act: activations.wgsl) is uniform: one
// pipeline per layout serves every bias and activation (a first run compiles each pipeline).
//!include activations.wgsl
//!include tile_product.wgsl

struct Params { M: u32, N: u32, K: u32, strideA: u32, strideB: u32, strideC: u32, alpha: f32, batch: u32, kChunk: u32, hasBias: u32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> c: array<TC>;

fn load_a(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (TRANS_A) { return f32(a[base + k * p.M + m]); }
  return f32(a[base + m * p.K + k]);
}

fn load_b(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  if (TRANS_B) { return f32(b[base + n * p.K + k]); }
  return f32(b[base + k * p.N + n]);
}

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wg.y * TILE_MN;
  let col0 = wg.x * TILE_MN;
  let item = wg.z % p.batch;
  let kBegin = (wg.z / p.batch) * p.kChunk;
  let kEnd = min(p.K, kBegin + p.kChunk);
  let aBase = item * p.strideA;
  let bBase = item * p.strideB;
  // acc[2i + j]: rows (lid.y + 8i)·4 + 0..3 (the vector's x..w is the row), columns (lid.x + 8j)·4 + 0..3.
  var acc: array<vec4<f32>, 16>;
  // Loading: thread li fills 4 k values of one group of 4 rows (and of 4 columns).
  let q = li % 16u;
  let kq = (li / 16u) * 4u;

  for (var k0 = kBegin; k0 < kEnd; k0 += TILE_K) {
    let m = row0 + q * 4u;
    let n = col0 + q * 4u;
    for (var t = 0u; t < 4u; t++) {
      let k = k0 + kq + t;
      As[(kq + t) * 16u + q] = vec4(load_a(aBase, m, k), load_a(aBase, m + 1u, k), load_a(aBase, m + 2u, k), load_a(aBase, m + 3u, k));
      Bs[(kq + t) * 16u + q] = vec4(load_b(bBase, k, n), load_b(bBase, k, n + 1u), load_b(bBase, k, n + 2u), load_b(bBase, k, n + 3u));
    }
    workgroupBarrier();
    accumulate_tiles(&acc, lid.y, lid.x);
    workgroupBarrier();
  }

  let cBase = wg.z * p.strideC;
  for (var i = 0u; i < 8u; i++) {
    let m = row0 + (lid.y + 8u * (i / 4u)) * 4u + i % 4u;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 2u; j++) {
      let v4 = acc[(i / 4u) * 8u + (i % 4u) * 2u + j];
      for (var s = 0u; s < 4u; s++) {
        let n = col0 + (lid.x + 8u * j) * 4u + s;
        if (n >= p.N) { break; }
        var v = v4[s];
        if (p.hasBias != 0u) { v += f32(bias[n]); }
        c[cBase + m * p.N + n] = TC(activate(v, p.act, p.alpha));
      }
    }
  }
}
