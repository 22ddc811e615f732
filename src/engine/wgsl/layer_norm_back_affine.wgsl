// LayerNorm backward, dγ and dβ: one workgroup per column reduces over all rows (no
// atomics), recomputing x̂ = (x − mean)·rstd from the forward's stats [rows, 2]:
// dγ[i] = Σ dy·x̂, dβ[i] = Σ dy. Defines: WG.
//!include reduce.wgsl
struct Params { rows: u32, D: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> stats: array<TStats>;
@group(0) @binding(3) var<storage, read> dy: array<TDy>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<TDgamma>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<TDbeta>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let col = wg.x;
  var sdy = 0.0;
  var sdyx = 0.0;
  for (var r = lid; r < p.rows; r += WG) {
    let d = f32(dy[r * p.D + col]);
    sdy += d;
    sdyx += d * (f32(x[r * p.D + col]) - f32(stats[r * 2u])) * f32(stats[r * 2u + 1u]);
  }
  let tdy = wg_sum(sdy, lid);
  let tdyx = wg_sum(sdyx, lid);
  if (lid == 0u) {
    dgamma[col] = TDgamma(tdyx);
    dbeta[col] = TDbeta(tdy);
  }
}
