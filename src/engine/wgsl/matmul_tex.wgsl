enable subgroups;
// C[item] = act(A[item] · W[item]ᵀ + bias), f32 accumulation, for CPU adapters (kernels.ts; the
// measured study is ../shared/design/lavapipe-kernels.md). A and W are rgba32float textures,
// texel (kv, row) = row[4kv .. 4kv + 3], zero past K (to_texture.wgsl): A holds one block of M
// rows per item, W one block of N rows (wItemRows = N) per item or one shared block (wItemRows = 0).
// One workgroup = one 8-lane subgroup (one AVX2 vector on llvmpipe). Lane l owns rows mb + 8r + l
// (r < 8) and the subgroup's 16 columns n0 .. n0 + 15: it fetches its own A texels, and W rows
// n0 + l and n0 + 8 + l, whose values every lane gets by subgroupBroadcast. No storage-buffer or
// workgroup-memory loads in the loop (llvmpipe turns each into 8 per-lane scalar loads with bounds
// checks), no barriers. The four k steps are written out: a kk loop stays a masked loop (0.8–0.9×).
// Dispatch (ceil(N / 16), ceil(M / 64), items). The epilogue (hasBias, act: activations.wgsl) is
// uniform: one pipeline serves every bias and activation (a first run compiles each pipeline).
//!include activations.wgsl

const R = 8u;
const G = 4u;
struct Params { M: u32, N: u32, K4: u32, wItemRows: u32, cBase: u32, cItem: u32, alpha: f32, hasBias: u32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<TBias>;
@group(0) @binding(2) var<storage, read_write> c: array<TC>;
@group(0) @binding(3) var at: texture_2d<f32>;
@group(0) @binding(4) var wt: texture_2d<f32>;

// One k: the 16 W values (x0 of lanes 0..7, x1 of lanes 0..7) times this lane's R A values.
fn kstep(acc: ptr<function, array<array<vec4<f32>, G>, R>>, a: ptr<function, array<vec4<f32>, R>>, kk: u32, x0: f32, x1: f32) {
  let b = array<vec4<f32>, G>(
    vec4(subgroupBroadcast(x0, 0u), subgroupBroadcast(x0, 1u), subgroupBroadcast(x0, 2u), subgroupBroadcast(x0, 3u)),
    vec4(subgroupBroadcast(x0, 4u), subgroupBroadcast(x0, 5u), subgroupBroadcast(x0, 6u), subgroupBroadcast(x0, 7u)),
    vec4(subgroupBroadcast(x1, 0u), subgroupBroadcast(x1, 1u), subgroupBroadcast(x1, 2u), subgroupBroadcast(x1, 3u)),
    vec4(subgroupBroadcast(x1, 4u), subgroupBroadcast(x1, 5u), subgroupBroadcast(x1, 6u), subgroupBroadcast(x1, 7u)));
  for (var r = 0u; r < R; r++) {
    let ar = (*a)[r][kk];
    for (var g = 0u; g < G; g++) { (*acc)[r][g] += ar * b[g]; }
  }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sl: u32) {
  let n0 = wg.x * 4u * G;
  let mb = wg.y * 8u * R;
  let aRow0 = wg.z * p.M;
  let wRow0 = wg.z * p.wItemRows;
  // Lanes past the edge fetch the last row again (clamped) and their results are not stored.
  let wn0 = wRow0 + min(n0 + sl, p.N - 1u);
  let wn1 = wRow0 + min(n0 + 8u + sl, p.N - 1u);
  var acc: array<array<vec4<f32>, G>, R>;
  for (var kv = 0u; kv < p.K4; kv++) {
    var a: array<vec4<f32>, R>;
    for (var r = 0u; r < R; r++) { a[r] = textureLoad(at, vec2u(kv, aRow0 + min(mb + 8u * r + sl, p.M - 1u)), 0); }
    let w0 = textureLoad(wt, vec2u(kv, wn0), 0);
    let w1 = textureLoad(wt, vec2u(kv, wn1), 0);
    kstep(&acc, &a, 0u, w0.x, w1.x);
    kstep(&acc, &a, 1u, w0.y, w1.y);
    kstep(&acc, &a, 2u, w0.z, w1.z);
    kstep(&acc, &a, 3u, w0.w, w1.w);
  }
  let cItem = p.cBase + wg.z * p.cItem;
  // The 16 columns' bias read once, not once per element under the uniform branch.
  var bv: array<vec4<f32>, G>;
  if (p.hasBias != 0u) {
    for (var g = 0u; g < G; g++) {
      for (var s = 0u; s < 4u; s++) { bv[g][s] = f32(bias[min(n0 + 4u * g + s, p.N - 1u)]); }
    }
  }
  for (var r = 0u; r < R; r++) {
    let m = mb + 8u * r + sl;
    if (m >= p.M) { continue; }
    for (var g = 0u; g < G; g++) {
      for (var s = 0u; s < 4u; s++) {
        let n = n0 + 4u * g + s;
        if (n >= p.N) { break; }
        c[cItem + m * p.N + n] = TC(activate(acc[r][g][s] + bv[g][s], p.act, p.alpha));
      }
    }
  }
}
