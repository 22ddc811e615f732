// GEGLU's gate: x [rows, 2F] = [hidden | gate] → y [rows, F] = hidden · gelu(gate)
// (diffusers' GEGLU after its projection; erf GELU).
//!include activations.wgsl
struct Params { rows: u32, F: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.rows * p.F) { return; }
  let r = i / p.F;
  let c = i % p.F;
  let hidden = f32(x[r * 2u * p.F + c]);
  let gate = f32(x[r * 2u * p.F + p.F + c]);
  y[i] = TY(hidden * activate(gate, 1u, 0.0));
}
