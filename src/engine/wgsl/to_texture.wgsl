// Gathers a strided view of a tensor into an rgba32float texture for the CPU-adapter kernels
// (kernels.ts). A texture row is `segs` segments of segCols values, each padded with zeros to
// whole texels (segTexels = ceil(segCols / 4)), so a K that is not a multiple of 4 adds nothing
// to a product. Texel (s·segTexels + t, row), row = item·rowsPerItem + r, holds values
// i = 4t .. 4t + 3 of segment s: src[base + item·sItem + r·sRow + s·sSeg + i·sK].
// One segment of K values is a matrix row (sK = N, sRow = 1 reads a [K, N] matrix transposed);
// segments of Cin channels, one per pixel or kernel tap, lay out images and conv weights.
// Workgroups of 8 texels × 8 rows, each thread storing its texel in ROWS rows 8 apart, so a
// short row (K = 32 is 8 texels) leaves no lanes idle and each invocation does several texels
// (lavapipe pays a fixed cost per invocation: common.ts LOOP_ELEMENTS).
// Dispatch (ceil(segs · segTexels / 8), ceil(rows / (8 · ROWS))): matmul_tex.ts toTexture.
struct Params { rows: u32, rowsPerItem: u32, segs: u32, segCols: u32, base: u32, sItem: u32, sRow: u32, sSeg: u32, sK: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<TX>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

const ROWS = 8u;

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let segTexels = (p.segCols + 3u) / 4u;
  let texel = wg.x * 8u + lid.x;
  if (texel >= p.segs * segTexels) { return; }
  let s = texel / segTexels;
  let i0 = (texel % segTexels) * 4u;
  for (var r = 0u; r < ROWS; r++) {
    let row = (wg.y * ROWS + r) * 8u + lid.y;
    if (row < p.rows) {
      let at = p.base + (row / p.rowsPerItem) * p.sItem + (row % p.rowsPerItem) * p.sRow + s * p.sSeg;
      var v = vec4<f32>(0.0);
      for (var j = 0u; j < 4u; j++) {
        if (i0 + j < p.segCols) { v[j] = f32(src[at + (i0 + j) * p.sK]); }
      }
      textureStore(dst, vec2u(texel, row), v);
    }
  }
}
