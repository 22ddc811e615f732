// acc += x · scale in place (gradient accumulation: acc is f32, x any float type).
struct Params { n: u32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<TX>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  acc[i] = acc[i] + f32(x[i]) * p.scale;
}
