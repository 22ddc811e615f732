// from_texture.wgsl for packed f16 texels (to_texture_h.wgsl's layout: 8 values per rgba32uint
// texel, f16 pairs, the first of a pair in the low half). Same Params.
// Dispatch (ceil(segs · segTexels / 64), rows).
struct Params { rows: u32, rowsPerItem: u32, segs: u32, segCols: u32, base: u32, sItem: u32, sRow: u32, sSeg: u32, sK: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<TX>;
@group(0) @binding(2) var src: texture_2d<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let segTexels = (p.segCols + 7u) / 8u;
  let texel = gid.x;
  let row = gid.y;
  if (texel >= p.segs * segTexels || row >= p.rows) { return; }
  let s = texel / segTexels;
  let i0 = (texel % segTexels) * 8u;
  let at = p.base + (row / p.rowsPerItem) * p.sItem + (row % p.rowsPerItem) * p.sRow + s * p.sSeg;
  let u = textureLoad(src, vec2u(texel, row), 0);
  for (var j = 0u; j < 8u; j++) {
    if (i0 + j < p.segCols) { dst[at + (i0 + j) * p.sK] = TX(unpack2x16float(u[j / 2u])[j % 2u]); }
  }
}
