// LayerNorm over the last dimension: one workgroup per row, two-pass mean and
// variance in f32 (the row is read three times; it is short and stays in cache).
// Each row's mean and 1/std go to stats [rows, 2] for the backward. Defines: WG.
//!include reduce.wgsl
struct Params { rows: u32, D: u32, eps: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> gamma: array<TGamma>;
@group(0) @binding(3) var<storage, read> beta: array<TBeta>;
@group(0) @binding(4) var<storage, read_write> y: array<TY>;
@group(0) @binding(5) var<storage, read_write> stats: array<TStats>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * p.groupsX;
  if (row >= p.rows) { return; }
  let base = row * p.D;
  var s = 0.0;
  for (var i = lid; i < p.D; i += WG) { s += f32(x[base + i]); }
  let mean = wg_sum(s, lid) / f32(p.D);
  var s2 = 0.0;
  for (var i = lid; i < p.D; i += WG) { let d = f32(x[base + i]) - mean; s2 += d * d; }
  let rstd = inverseSqrt(wg_sum(s2, lid) / f32(p.D) + p.eps);
  if (lid == 0u) {
    stats[row * 2u] = TStats(mean);
    stats[row * 2u + 1u] = TStats(rstd);
  }
  for (var i = lid; i < p.D; i += WG) {
    y[base + i] = TY((f32(x[base + i]) - mean) * rstd * f32(gamma[i]) + f32(beta[i]));
  }
}
