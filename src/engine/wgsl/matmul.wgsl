// C[b] = act(A[b] · op(B[b]) + bias), f32 accumulation.
// A: [batch, M, K] row-major. B: [N, K] when TRANS_B (a PyTorch Linear weight), else
// [K, N]. A batch stride of 0 broadcasts an operand (one weight for all items).
// 64×64 output tile per workgroup, 16×16 threads computing 4×4 outputs each from
// vec4 rows of the shared tiles. Defines: TRANS_B, HAS_BIAS, ACT (activations.wgsl).
//!include activations.wgsl

struct Params { M: u32, N: u32, K: u32, strideA: u32, strideB: u32, strideC: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> c: array<TC>;

const TILE = 64u;
const TK = 16u;
var<workgroup> As: array<vec4<f32>, 256>; // [k][m/4]
var<workgroup> Bs: array<vec4<f32>, 256>; // [k][n/4]

fn load_a(base: u32, m: u32, k: u32) -> f32 {
  if (m < p.M && k < p.K) { return f32(a[base + m * p.K + k]); }
  return 0.0;
}

fn load_b(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  if (TRANS_B) { return f32(b[base + n * p.K + k]); }
  return f32(b[base + k * p.N + n]);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let row0 = wg.y * TILE;
  let col0 = wg.x * TILE;
  let aBase = wg.z * p.strideA;
  let bBase = wg.z * p.strideB;
  var acc: array<vec4<f32>, 4>;

  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    // Each thread loads 4 consecutive rows (or columns) of one k, as one vec4.
    let k = li % TK;
    let q = li / TK; // 0..15: which group of 4 rows/cols
    let m = row0 + q * 4u;
    As[k * 16u + q] = vec4(load_a(aBase, m, k0 + k), load_a(aBase, m + 1u, k0 + k),
                           load_a(aBase, m + 2u, k0 + k), load_a(aBase, m + 3u, k0 + k));
    let n = col0 + q * 4u;
    Bs[k * 16u + q] = vec4(load_b(bBase, k0 + k, n), load_b(bBase, k0 + k, n + 1u),
                           load_b(bBase, k0 + k, n + 2u), load_b(bBase, k0 + k, n + 3u));
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let av = As[kk * 16u + lid.y];
      let bv = Bs[kk * 16u + lid.x];
      acc[0] += av.x * bv;
      acc[1] += av.y * bv;
      acc[2] += av.z * bv;
      acc[3] += av.w * bv;
    }
    workgroupBarrier();
  }

  let cBase = wg.z * p.strideC;
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y * 4u + i;
    if (m >= p.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x * 4u + j;
      if (n >= p.N) { break; }
      var v = acc[i][j];
      if (HAS_BIAS) { v += f32(bias[n]); }
      c[cBase + m * p.N + n] = TC(activate(v, ACT, p.alpha));
    }
  }
}
