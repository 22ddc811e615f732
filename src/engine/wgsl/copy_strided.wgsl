// dst[dstOff + Σ idx·dstStride] = src[srcOff + Σ idx·srcStride] over an up-to-8-D
// index space: one kernel for slice, concat (a copy per input), permute/transpose,
// broadcast (stride 0) and dtype casts (TSrc → TDst).
struct Params {
  shape: array<vec4<u32>, 2>,
  srcStride: array<vec4<u32>, 2>,
  dstStride: array<vec4<u32>, 2>,
  n: u32, srcOff: u32, dstOff: u32, groupsX: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<TSrc>;
@group(0) @binding(2) var<storage, read_write> dst: array<TDst>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  var rem = i;
  var is = p.srcOff;
  var id = p.dstOff;
  for (var d = 7; d >= 0; d--) {
    let size = p.shape[d / 4][d % 4];
    let idx = rem % size;
    rem /= size;
    is += idx * p.srcStride[d / 4][d % 4];
    id += idx * p.dstStride[d / 4][d % 4];
  }
  dst[id] = TDst(f32(src[is]));
}
