// Backward of geglu.wgsl: x [rows, 2F] = [hidden | gate], dy [rows, F] → dx [rows, 2F]:
// d hidden = dy · gelu(gate), d gate = dy · hidden · gelu'(gate). One thread per dx element.
//!include activations.wgsl
//!include activations_back.wgsl
struct Params { rows: u32, F: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.rows * 2u * p.F) { return; }
  let r = i / (2u * p.F);
  let c = i % (2u * p.F) % p.F;
  let hidden = f32(x[r * 2u * p.F + c]);
  let gate = f32(x[r * 2u * p.F + p.F + c]);
  let g = f32(dy[r * p.F + c]);
  if (i % (2u * p.F) < p.F) {
    dx[i] = TDx(g * activate(gate, 1u, 0.0));
  } else {
    dx[i] = TDx(g * hidden * activate_grad(gate, 1u, 0.0));
  }
}
