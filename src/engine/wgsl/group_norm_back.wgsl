// GroupNorm (+ fused activation) backward, dx: one workgroup per (group, item) as in
// the forward, whose per-group mean and 1/std (stats [N, groups, 2]) it reuses. With
// x̂ = (x − mean)·rstd, z = x̂·γ + β and g = dy·act'(z)·γ (the gradient w.r.t. x̂),
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) over the group. Both passes walk channel by
// channel (no integer division per value), as the forward. Defines: WG, ACT.
//!include reduce.wgsl
//!include activations.wgsl
//!include activations_back.wgsl
struct Params { C: u32, S: u32, groups: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> gamma: array<TGamma>;
@group(0) @binding(3) var<storage, read> beta: array<TBeta>;
@group(0) @binding(4) var<storage, read> stats: array<TStats>;
@group(0) @binding(5) var<storage, read> dy: array<TDy>;
@group(0) @binding(6) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wg.x;
  let n = wg.y;
  let cpg = p.C / p.groups;
  let count = cpg * p.S;
  let base = (n * p.C + g * cpg) * p.S;
  let mean = f32(stats[(n * p.groups + g) * 2u]);
  let rstd = f32(stats[(n * p.groups + g) * 2u + 1u]);
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = g * cpg; c < (g + 1u) * cpg; c++) {
    let gc = f32(gamma[c]);
    let bc = f32(beta[c]);
    let at = base + (c - g * cpg) * p.S;
    for (var s = lid; s < p.S; s += WG) {
      let xhat = (f32(x[at + s]) - mean) * rstd;
      let gv = f32(dy[at + s]) * activate_grad(xhat * gc + bc, ACT, 0.0) * gc;
      sg += gv;
      sgx += gv * xhat;
    }
  }
  let meanG = wg_sum(sg, lid) / f32(count);
  let meanGx = wg_sum(sgx, lid) / f32(count);
  for (var c = g * cpg; c < (g + 1u) * cpg; c++) {
    let gc = f32(gamma[c]);
    let bc = f32(beta[c]);
    let at = base + (c - g * cpg) * p.S;
    for (var s = lid; s < p.S; s += WG) {
      let xhat = (f32(x[at + s]) - mean) * rstd;
      let gv = f32(dy[at + s]) * activate_grad(xhat * gc + bc, ACT, 0.0) * gc;
      dx[at + s] = TDx(rstd * (gv - meanG - xhat * meanGx));
    }
  }
}
