enable subgroups;
// Attention scores on the CPU-adapter path (kernels.ts, ops/attention_tex.ts): S = scale·Q·Kᵀ for a
// block of queries q0 .. q0 + nq − 1 of every head z = item·heads + h of a block of batch items,
// into an rgba32float storage texture read by attention_row_max_tex and attention_values_tex.
// The texture matmul's shape (lane_tile.wgsl): lane = query row, the subgroup's 8J keys fetched
// lane-spread from K's texture and broadcast; no storage-buffer loads, no barriers.
// qt: [items·Lq rows, heads·dT texels], head h at texel h·dT, zero past the head size; kt: [items·Lk
// rows], same texels. s: texel (key / 4, z·nq + i) holds keys key .. key + 3 of query q0 + i; keys
// ≥ Lk (and, with CAUSAL, after the query) hold NEG, so their exp is 0.
// Dispatch (ceil(Lk / 8J), ceil(nq / 8R), items·heads). Defines: R, J, CAUSAL.
//!include lane_tile.wgsl

const NEG = -3.0e38;
struct Params { heads: u32, Lq: u32, Lk: u32, nq: u32, q0: u32, dT: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var qt: texture_2d<f32>;
@group(0) @binding(2) var kt: texture_2d<f32>;
@group(0) @binding(3) var s: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sl: u32) {
  let n0 = wg.x * 8u * J;
  let mb = wg.y * 8u * R;
  let item = wg.z / p.heads;
  let t0 = (wg.z % p.heads) * p.dT;
  // Lanes past the edge fetch the last row again (clamped); their results are not stored.
  var qRows: array<u32, R>;
  for (var r = 0u; r < R; r++) { qRows[r] = item * p.Lq + p.q0 + min(mb + 8u * r + sl, p.nq - 1u); }
  var kRows: array<u32, J>;
  for (var j = 0u; j < J; j++) { kRows[j] = item * p.Lk + min(n0 + 8u * j + sl, p.Lk - 1u); }
  var acc: array<array<vec4<f32>, C>, R>;
  for (var kv = 0u; kv < p.dT; kv++) {
    var a: array<vec4<f32>, R>;
    for (var r = 0u; r < R; r++) { a[r] = textureLoad(qt, vec2u(t0 + kv, qRows[r]), 0); }
    var x: array<vec4<f32>, J>;
    for (var j = 0u; j < J; j++) { x[j] = textureLoad(kt, vec2u(t0 + kv, kRows[j]), 0); }
    tile_texel(&acc, &a, &x);
  }
  for (var r = 0u; r < R; r++) {
    let i = mb + 8u * r + sl;
    if (i >= p.nq) { continue; }
    let query = p.q0 + i;
    for (var c = 0u; c < C; c++) {
      let key0 = n0 + 4u * c;
      if (key0 >= p.Lk) { break; }
      var v = acc[r][c] * p.scale;
      for (var t = 0u; t < 4u; t++) {
        if (key0 + t >= p.Lk || (CAUSAL && key0 + t > query)) { v[t] = NEG; }
      }
      textureStore(s, vec2u(key0 / 4u, wg.z * p.nq + i), v);
    }
  }
}
