enable subgroups;
// Attention output on the CPU-adapter path (ops/attention_tex.ts): O = softmax(S)·V for the block
// of attention_scores_tex, the softmax folded in: the S operand's values become exp(s − rowMax)
// as they are fetched, each lane sums its rows' exps, and the store divides by the sum (the study
// ../shared/design/lavapipe-kernels.md measured this ×17 the flash kernel). Also writes each
// row's log-sum-exp, rowMax + log(sum), for the backward. Lane = query row (lane_tile.wgsl), the
// subgroup's 8J head columns fetched lane-spread from Vᵀ's texture and broadcast.
// s: [items·heads·nq rows, K4 texels]; vt: Vᵀ, [items·heads·d rows (z·d + column), K4 texels of
// keys, zero past Lk]; o: [B, Lq, heads·d] (items from b0); lse: [B, heads, Lq].
// Dispatch (ceil(d / 8J), ceil(nq / 8R), items·heads). Defines: R, J.
//!include lane_tile.wgsl

struct Params { heads: u32, Lq: u32, d: u32, nq: u32, q0: u32, b0: u32, K4: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rowMax: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<TO>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var s: texture_2d<f32>;
@group(0) @binding(5) var vt: texture_2d<f32>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sl: u32) {
  let n0 = wg.x * 8u * J;
  let mb = wg.y * 8u * R;
  var sRows: array<u32, R>;
  var mx: array<vec4<f32>, R>;
  for (var r = 0u; r < R; r++) {
    sRows[r] = wg.z * p.nq + min(mb + 8u * r + sl, p.nq - 1u);
    mx[r] = vec4(rowMax[sRows[r]]);
  }
  var vRows: array<u32, J>;
  for (var j = 0u; j < J; j++) { vRows[j] = wg.z * p.d + min(n0 + 8u * j + sl, p.d - 1u); }
  var acc: array<array<vec4<f32>, C>, R>;
  var sum: array<vec4<f32>, R>;
  for (var kv = 0u; kv < p.K4; kv++) {
    var a: array<vec4<f32>, R>;
    for (var r = 0u; r < R; r++) {
      a[r] = exp(textureLoad(s, vec2u(kv, sRows[r]), 0) - mx[r]);
      sum[r] += a[r];
    }
    var x: array<vec4<f32>, J>;
    for (var j = 0u; j < J; j++) { x[j] = textureLoad(vt, vec2u(kv, vRows[j]), 0); }
    tile_texel(&acc, &a, &x);
  }
  let item = p.b0 + wg.z / p.heads;
  let h = wg.z % p.heads;
  for (var r = 0u; r < R; r++) {
    let i = mb + 8u * r + sl;
    if (i >= p.nq) { continue; }
    let query = p.q0 + i;
    let l = sum[r].x + sum[r].y + sum[r].z + sum[r].w;
    let inv = 1.0 / l;
    let oRow = ((item * p.Lq + query) * p.heads + h) * p.d;
    for (var c = 0u; c < C; c++) {
      for (var t = 0u; t < 4u; t++) {
        let col = n0 + 4u * c + t;
        if (col < p.d) { o[oRow + col] = TO(acc[r][c][t] * inv); }
      }
    }
    if (wg.x == 0u) { lse[(item * p.heads + h) * p.Lq + query] = mx[r].x + log(l); }
  }
}
