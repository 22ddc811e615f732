// DISTS per-channel similarities of two feature maps x, y [C, P] (P = H·W), one workgroup
// per channel: out[c] = (S1, S2) with
//   S1 = (2 μx μy + c1) / (μx² + μy² + c1),  S2 = (2 σxy + c2) / (σx² + σy² + c2),
// population moments over P. Two passes: means, then centred sums (pyiqa's E[xy] − μxμy
// equals the centred covariance; centring avoids its f32 cancellation).
//!include reduce.wgsl
struct Params { C: u32, P: u32, c1: f32, c2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> y: array<TY>;
@group(0) @binding(3) var<storage, read_write> out: array<TOut>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wg.x;
  if (c >= p.C) { return; }
  let base = c * p.P;
  let n = f32(p.P);
  var sx = 0.0;
  var sy = 0.0;
  for (var i = lid; i < p.P; i += WG) { sx += f32(x[base + i]); sy += f32(y[base + i]); }
  let mx = wg_sum(sx, lid) / n;
  let my = wg_sum(sy, lid) / n;
  var vx = 0.0;
  var vy = 0.0;
  var cv = 0.0;
  for (var i = lid; i < p.P; i += WG) {
    let dx = f32(x[base + i]) - mx;
    let dy = f32(y[base + i]) - my;
    vx += dx * dx;
    vy += dy * dy;
    cv += dx * dy;
  }
  let varx = wg_sum(vx, lid) / n;
  let vary = wg_sum(vy, lid) / n;
  let cov = wg_sum(cv, lid) / n;
  if (lid == 0u) {
    out[2u * c] = TOut((2.0 * mx * my + p.c1) / (mx * mx + my * my + p.c1));
    out[2u * c + 1u] = TOut((2.0 * cov + p.c2) / (varx + vary + p.c2));
  }
}
