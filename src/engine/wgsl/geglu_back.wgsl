// Backward of geglu.wgsl: x [rows, 2F] = [hidden | gate], dy [rows, F] → dx [rows, 2F]:
// d hidden = dy · gelu(gate), d gate = dy · hidden · gelu'(gate). One workgroup per row
// as the forward; each thread writes both halves for its columns.
//!include activations.wgsl
//!include activations_back.wgsl
struct Params { rows: u32, F: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x + wg.y * p.groupsX;
  if (r >= p.rows) { return; }
  for (var c = lid; c < p.F; c += 64u) {
    let at = r * 2u * p.F + c;
    let hidden = f32(x[at]);
    let gate = f32(x[at + p.F]);
    let g = f32(dy[r * p.F + c]);
    dx[at] = TDx(g * activate(gate, 1u, 0.0));
    dx[at + p.F] = TDx(g * hidden * activate_grad(gate, 1u, 0.0));
  }
}
