// LayerNorm backward, dx: one workgroup per row as in the forward, whose per-row mean
// and 1/std (stats [rows, 2]) it reuses. With x̂ = (x − mean)·rstd and g = dy·γ,
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) over the row. Defines: WG.
//!include reduce.wgsl
struct Params { rows: u32, D: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> gamma: array<TGamma>;
@group(0) @binding(3) var<storage, read> stats: array<TStats>;
@group(0) @binding(4) var<storage, read> dy: array<TDy>;
@group(0) @binding(5) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * p.groupsX;
  if (row >= p.rows) { return; }
  let base = row * p.D;
  let mean = f32(stats[row * 2u]);
  let rstd = f32(stats[row * 2u + 1u]);
  var sg = 0.0;
  var sgx = 0.0;
  for (var i = lid; i < p.D; i += WG) {
    let gv = f32(dy[base + i]) * f32(gamma[i]);
    sg += gv;
    sgx += gv * (f32(x[base + i]) - mean) * rstd;
  }
  let meanG = wg_sum(sg, lid) / f32(p.D);
  let meanGx = wg_sum(sgx, lid) / f32(p.D);
  for (var i = lid; i < p.D; i += WG) {
    let xhat = (f32(x[base + i]) - mean) * rstd;
    dx[base + i] = TDx(rstd * (f32(dy[base + i]) * f32(gamma[i]) - meanG - xhat * meanGx));
  }
}
