// to_texture.wgsl for packed f16 operands: an rgba32uint texel holds 8 consecutive values of a
// segment as f16 pairs (pack2x16float: the first of a pair in the low half), so a fetch brings
// twice the values of an rgba32float one. Same Params and layout, 8 values per texel.
// Workgroups of 8 texels × 8 rows, ROWS rows a thread, as to_texture.wgsl.
// Dispatch (ceil(segs · segTexels / 8), ceil(rows / (8 · ROWS))).
struct Params { rows: u32, rowsPerItem: u32, segs: u32, segCols: u32, base: u32, sItem: u32, sRow: u32, sSeg: u32, sK: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<TX>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32uint, write>;

fn value(at: u32, i: u32) -> f32 {
  if (i < p.segCols) { return f32(src[at + i * p.sK]); }
  return 0.0;
}

const ROWS = 8u;

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let segTexels = (p.segCols + 7u) / 8u;
  let texel = wg.x * 8u + lid.x;
  if (texel >= p.segs * segTexels) { return; }
  let s = texel / segTexels;
  let i0 = (texel % segTexels) * 8u;
  for (var r = 0u; r < ROWS; r++) {
    let row = (wg.y * ROWS + r) * 8u + lid.y;
    if (row < p.rows) {
      let at = p.base + (row / p.rowsPerItem) * p.sItem + (row % p.rowsPerItem) * p.sRow + s * p.sSeg;
      var u = vec4<u32>(0u);
      for (var j = 0u; j < 4u; j++) {
        u[j] = pack2x16float(vec2(value(at, i0 + 2u * j), value(at, i0 + 2u * j + 1u)));
      }
      textureStore(dst, vec2u(texel, row), u);
    }
  }
}
