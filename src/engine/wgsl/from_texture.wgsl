// The inverse of to_texture.wgsl: writes the values a texture holds back to the strided view of
// `dst` they were gathered from (same Params). A weight kept only as its texture on the CPU path
// (textures.ts) gets its buffer back this way when a buffer kernel needs it. Each value of the
// view is written once (the view of a weight is one-to-one); the zero padding is not read.
// Dispatch (ceil(segs · segTexels / 64), rows).
struct Params { rows: u32, rowsPerItem: u32, segs: u32, segCols: u32, base: u32, sItem: u32, sRow: u32, sSeg: u32, sK: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<TX>;
@group(0) @binding(2) var src: texture_2d<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let segTexels = (p.segCols + 3u) / 4u;
  let texel = gid.x;
  let row = gid.y;
  if (texel >= p.segs * segTexels || row >= p.rows) { return; }
  let s = texel / segTexels;
  let i0 = (texel % segTexels) * 4u;
  let at = p.base + (row / p.rowsPerItem) * p.sItem + (row % p.rowsPerItem) * p.sRow + s * p.sSeg;
  let v = textureLoad(src, vec2u(texel, row), 0);
  for (var j = 0u; j < 4u; j++) {
    if (i0 + j < p.segCols) { dst[at + (i0 + j) * p.sK] = TX(v[j]); }
  }
}
