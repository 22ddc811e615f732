// GroupNorm (+ fused activation) backward, dγ and dβ: one workgroup per channel
// reduces over the batch and the spatial positions (no atomics), recomputing
// x̂ = (x − mean)·rstd from the forward's stats [N, groups, 2] and dz = dy·act'(z):
// dγ[c] = Σ dz·x̂, dβ[c] = Σ dz. Defines: WG, ACT.
//!include reduce.wgsl
//!include activations.wgsl
//!include activations_back.wgsl
struct Params { N: u32, C: u32, S: u32, groups: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> gamma: array<TGamma>;
@group(0) @binding(3) var<storage, read> beta: array<TBeta>;
@group(0) @binding(4) var<storage, read> stats: array<TStats>;
@group(0) @binding(5) var<storage, read> dy: array<TDy>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<TDgamma>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<TDbeta>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wg.x;
  let grp = c / (p.C / p.groups);
  let gam = f32(gamma[c]);
  let bet = f32(beta[c]);
  var sdz = 0.0;
  var sdzx = 0.0;
  for (var i = lid; i < p.N * p.S; i += WG) {
    let n = i / p.S;
    let at = (n * p.C + c) * p.S + i % p.S;
    let xhat = (f32(x[at]) - f32(stats[(n * p.groups + grp) * 2u])) * f32(stats[(n * p.groups + grp) * 2u + 1u]);
    let dz = f32(dy[at]) * activate_grad(xhat * gam + bet, ACT, 0.0);
    sdz += dz;
    sdzx += dz * xhat;
  }
  let tdz = wg_sum(sdz, lid);
  let tdzx = wg_sum(sdzx, lid);
  if (lid == 0u) {
    dgamma[c] = TDgamma(tdzx);
    dbeta[c] = TDbeta(tdz);
  }
}
