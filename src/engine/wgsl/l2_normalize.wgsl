// x / max(‖x‖₂, eps) over the last dimension, one workgroup per row.
//!include reduce.wgsl
struct Params { rows: u32, D: u32, eps: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * p.groupsX;
  if (row >= p.rows) { return; }
  let base = row * p.D;
  var s = 0.0;
  for (var i = lid; i < p.D; i += WG) { let v = f32(x[base + i]); s += v * v; }
  let inv = 1.0 / max(sqrt(wg_sum(s, lid)), p.eps);
  for (var i = lid; i < p.D; i += WG) { y[base + i] = TY(f32(x[base + i]) * inv); }
}
