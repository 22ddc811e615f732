// Backward of unary.wgsl: dx = dy · scale · act'(x) (the shift has no gradient).
//!include activations.wgsl
//!include activations_back.wgsl
struct Params { n: u32, alpha: f32, scale: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  dx[i] = TDx(f32(dy[i]) * p.scale * activate_grad(f32(x[i]), ACT, p.alpha));
}
