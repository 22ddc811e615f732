// Backward of mse.wgsl for one operand: d = dloss · scale · (a − b), scale = 2/n for a
// and −2/n for b.
struct Params { n: u32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read> dloss: array<TDLoss>;
@group(0) @binding(4) var<storage, read_write> d: array<TD>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  d[i] = TD(f32(dloss[0]) * p.scale * (f32(a[i]) - f32(b[i])));
}
