// Softmax over the last dimension, one workgroup per row, max-subtracted, f32.
//!include reduce.wgsl
struct Params { rows: u32, D: u32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * p.groupsX;
  if (row >= p.rows) { return; }
  let base = row * p.D;
  var mx = -3.4e38;
  for (var i = lid; i < p.D; i += WG) { mx = max(mx, f32(x[base + i]) * p.scale); }
  mx = wg_max(mx, lid);
  var s = 0.0;
  for (var i = lid; i < p.D; i += WG) { s += exp(f32(x[base + i]) * p.scale - mx); }
  let inv = 1.0 / wg_sum(s, lid);
  for (var i = lid; i < p.D; i += WG) { y[base + i] = TY(exp(f32(x[base + i]) * p.scale - mx) * inv); }
}
