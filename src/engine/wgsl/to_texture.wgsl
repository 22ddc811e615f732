// Gathers a strided 2-D view of a tensor into an rgba32float texture for the CPU-adapter kernels
// (kernels.ts): texel (kv, row) holds v[4kv .. 4kv + 3] of that row, where row = item·rowsPerItem + r
// reads src[base + item·sItem + r·sRow + k·sK]. Values past `cols` are 0, so a K that is not a
// multiple of 4 adds nothing to a product. sK = N with sRow = 1 writes a [K, N] matrix transposed.
// Dispatch (ceil(ceil(cols / 4) / 64), rows).
struct Params { rows: u32, cols: u32, rowsPerItem: u32, base: u32, sItem: u32, sRow: u32, sK: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<TX>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let kv = gid.x;
  let row = gid.y;
  if (4u * kv >= p.cols || row >= p.rows) { return; }
  let at = p.base + (row / p.rowsPerItem) * p.sItem + (row % p.rowsPerItem) * p.sRow;
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    let k = 4u * kv + j;
    if (k < p.cols) { v[j] = f32(src[at + k * p.sK]); }
  }
  textureStore(dst, vec2u(kv, row), v);
}
