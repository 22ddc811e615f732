// Nearest-neighbour ×2 upsampling: x [rows, W] (rows = N·C·H) → y [rows, 2, 2W], each
// value written to its 2×2 block. One workgroup per source row, threads looping over it
// at stride 64: no integer division per value (as a 4-axis broadcast copy, three).
struct Params { rows: u32, W: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x + wg.y * p.groupsX;
  if (r >= p.rows) { return; }
  for (var w = lid; w < p.W; w += 64u) {
    let v = TY(x[r * p.W + w]);
    let at = r * 4u * p.W + 2u * w;
    y[at] = v;
    y[at + 1u] = v;
    y[at + 2u * p.W] = v;
    y[at + 2u * p.W + 1u] = v;
  }
}
