// GroupNorm on [N, C, S] (S = H·W): one workgroup per (item, group), two-pass f32
// statistics over the group's C/G·S values, per-channel affine, optional fused
// activation (SiLU in SD's resnets). Each group's mean and 1/std go to stats
// [N, groups, 2] for the backward. The output pass walks channel by channel, so no
// value pays an integer division for its channel (one per value cost lavapipe more
// than the loads). Define: WG. The activation code is a uniform: one pipeline
// per workgroup size serves every epilogue.
//!include reduce.wgsl
//!include activations.wgsl
struct Params { C: u32, S: u32, groups: u32, eps: f32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> gamma: array<TGamma>;
@group(0) @binding(3) var<storage, read> beta: array<TBeta>;
@group(0) @binding(4) var<storage, read_write> y: array<TY>;
@group(0) @binding(5) var<storage, read_write> stats: array<TStats>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wg.x;
  let n = wg.y;
  let cpg = p.C / p.groups;
  let count = cpg * p.S;
  let base = (n * p.C + g * cpg) * p.S;
  var s = 0.0;
  for (var i = lid; i < count; i += WG) { s += f32(x[base + i]); }
  let mean = wg_sum(s, lid) / f32(count);
  var s2 = 0.0;
  for (var i = lid; i < count; i += WG) { let d = f32(x[base + i]) - mean; s2 += d * d; }
  let rstd = inverseSqrt(wg_sum(s2, lid) / f32(count) + p.eps);
  if (lid == 0u) {
    stats[(n * p.groups + g) * 2u] = TStats(mean);
    stats[(n * p.groups + g) * 2u + 1u] = TStats(rstd);
  }
  for (var c = g * cpg; c < (g + 1u) * cpg; c++) {
    let scale = rstd * f32(gamma[c]);
    let shift = f32(beta[c]);
    let at = (n * p.C + c) * p.S;
    for (var s = lid; s < p.S; s += WG) { y[at + s] = TY(activate((f32(x[at + s]) - mean) * scale + shift, p.act, 0.0)); }
  }
}
