// y = activate(x) · scale + shift, elementwise (activation codes: activations.wgsl). The code is a
// uniform, not a define: one pipeline serves every activation (a first run compiles each pipeline).
// Each thread takes PER elements at stride 64 (common.ts LOOP_ELEMENTS).
//!include activations.wgsl
struct Params { n: u32, alpha: f32, scale: f32, shift: f32, groupsX: u32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

const PER = 32u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let first = (wg.x + wg.y * p.groupsX) * 64u * PER + lid;
  for (var j = 0u; j < PER; j++) {
    let i = first + j * 64u;
    if (i < p.n) { y[i] = TY(activate(f32(x[i]), p.act, p.alpha) * p.scale + p.shift); }
  }
}
