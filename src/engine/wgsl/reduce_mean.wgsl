// Mean over the middle axis of [outer, R, inner] → [outer, inner], f32 sums.
struct Params { outer: u32, R: u32, inner: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.outer * p.inner) { return; }
  let o = i / p.inner;
  let base = o * p.R * p.inner + i % p.inner;
  var s = 0.0;
  for (var r = 0u; r < p.R; r++) { s += f32(x[base + r * p.inner]); }
  y[i] = TY(s / f32(p.R));
}
