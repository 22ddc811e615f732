// dst[dstOff + Σ idx·dstStride] = src[srcOff + Σ idx·srcStride] over an up-to-8-D
// index space: one kernel for slice, concat (a copy per input), permute/transpose,
// broadcast (stride 0) and dtype casts (TSrc → TDst). Axes are merged where both views
// allow (common.ts collapseAxes) and right-aligned: RANK real axes, an integer division
// for each but the outermost. Each thread takes PER elements at stride 64 (as binary.wgsl).
struct Params {
  shape: array<vec4<u32>, 2>,
  srcStride: array<vec4<u32>, 2>,
  dstStride: array<vec4<u32>, 2>,
  n: u32, srcOff: u32, dstOff: u32, groupsX: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<TSrc>;
@group(0) @binding(2) var<storage, read_write> dst: array<TDst>;

const PER = 32u;
const OUTER = 8u - RANK;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let first = (wg.x + wg.y * p.groupsX) * 64u * PER + lid;
  for (var j = 0u; j < PER; j++) {
    let i = first + j * 64u;
    if (i < p.n) {
      var rem = i;
      var is = p.srcOff;
      var id = p.dstOff;
      for (var d = 7u; d > OUTER; d--) {
        let size = p.shape[d / 4u][d % 4u];
        let q = rem / size;
        let idx = rem - q * size;
        rem = q;
        is += idx * p.srcStride[d / 4u][d % 4u];
        id += idx * p.dstStride[d / 4u][d % 4u];
      }
      is += rem * p.srcStride[OUTER / 4u][OUTER % 4u];
      id += rem * p.dstStride[OUTER / 4u][OUTER % 4u];
      dst[id] = TDst(f32(src[is]));
    }
  }
}
