// GEGLU's gate: x [rows, 2F] = [hidden | gate] → y [rows, F] = hidden · gelu(gate)
// (diffusers' GEGLU after its projection; erf GELU). One workgroup per row, each thread
// looping over the row at stride 64: no integer division per value, and many values per
// thread (lavapipe pays a fixed cost per invocation; see common.ts LOOP_ELEMENTS).
//!include activations.wgsl
struct Params { rows: u32, F: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x + wg.y * p.groupsX;
  if (r >= p.rows) { return; }
  for (var c = lid; c < p.F; c += 64u) {
    let hidden = f32(x[r * 2u * p.F + c]);
    let gate = f32(x[r * 2u * p.F + p.F + c]);
    y[r * p.F + c] = TY(hidden * activate(gate, 1u, 0.0));
  }
}
