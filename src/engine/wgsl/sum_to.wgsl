// y = x summed over its broadcast axes (the backward of broadcasting): the host merges
// x's axes into at most 4 kept groups (the output, row-major) and 4 reduced groups of R
// elements in all, with x's strides for each. SPLIT: a workgroup sums one output (long
// reductions such as bias gradients); otherwise each thread sums one (short ones, e.g. the
// 2×2 blocks of an upsampling's gradient). f32 sums.
//!include reduce.wgsl
struct Params {
  keepShape: array<vec4<u32>, 1>, keepStride: array<vec4<u32>, 1>,
  redShape: array<vec4<u32>, 1>, redStride: array<vec4<u32>, 1>,
  nOut: u32, R: u32, groupsX: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

fn keptOffset(o: u32) -> u32 {
  var rem = o;
  var off = 0u;
  for (var d = 3; d >= 0; d--) {
    off += (rem % p.keepShape[0][d]) * p.keepStride[0][d];
    rem /= p.keepShape[0][d];
  }
  return off;
}

fn reducedOffset(j: u32) -> u32 {
  var rem = j;
  var off = 0u;
  for (var d = 3; d >= 0; d--) {
    off += (rem % p.redShape[0][d]) * p.redStride[0][d];
    rem /= p.redShape[0][d];
  }
  return off;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wg.x + wg.y * p.groupsX;
  if (SPLIT) {
    if (g >= p.nOut) { return; }
    let base = keptOffset(g);
    var s = 0.0;
    for (var j = lid; j < p.R; j += WG) { s += f32(x[base + reducedOffset(j)]); }
    s = wg_sum(s, lid);
    if (lid == 0u) { y[g] = TY(s); }
  } else {
    let o = g * WG + lid;
    if (o < p.nOut) {
      let base = keptOffset(o);
      var s = 0.0;
      for (var j = 0u; j < p.R; j++) { s += f32(x[base + reducedOffset(j)]); }
      y[o] = TY(s);
    }
  }
}
