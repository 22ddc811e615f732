// Luma of planar RGB [N, 3, H, W] → [N, 1, H, W]: Y = 0.299 R + 0.587 G + 0.114 B (the Y
// of YIQ, pyiqa's default), times SCALE, rounded half to even when ROUND (MATLAB-style
// 8-bit Y). Evaluated in f32 in this order, as torch does on float32 images.
struct Params { plane: u32, n: u32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  let img = i / p.plane;
  let base = img * 3u * p.plane + i % p.plane;
  var v = f32(x[base]) * 0.299 + f32(x[base + p.plane]) * 0.587 + f32(x[base + 2u * p.plane]) * 0.114;
  v = v * p.scale;
  if (ROUND) { v = round(v); }
  y[i] = TY(v);
}
