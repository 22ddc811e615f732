// out = a OP b with NumPy broadcasting: the host passes the output shape and each
// input's strides (0 on broadcast axes) with axes merged where both inputs allow
// (common.ts collapseAxes), right-aligned: RANK real axes, an integer division for
// each but the outermost (a same-shape op has none). Each thread takes PER elements at
// stride 64 (common.ts LOOP_ELEMENTS: one element a thread ran 5–10× slower on lavapipe).
// op: 0 add, 1 sub, 2 mul, 3 div, a uniform (one pipeline for all four).
struct Params {
  shape: array<vec4<u32>, 2>,
  strideA: array<vec4<u32>, 2>,
  strideB: array<vec4<u32>, 2>,
  n: u32, groupsX: u32, op: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<TA>;
@group(0) @binding(2) var<storage, read> b: array<TB>;
@group(0) @binding(3) var<storage, read_write> out: array<TOut>;

const PER = 32u;
const OUTER = 8u - RANK;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let first = (wg.x + wg.y * p.groupsX) * 64u * PER + lid;
  for (var j = 0u; j < PER; j++) {
    let i = first + j * 64u;
    if (i < p.n) {
      var rem = i;
      var ia = 0u;
      var ib = 0u;
      for (var d = 7u; d > OUTER; d--) {
        let size = p.shape[d / 4u][d % 4u];
        let q = rem / size;
        let idx = rem - q * size;
        rem = q;
        ia += idx * p.strideA[d / 4u][d % 4u];
        ib += idx * p.strideB[d / 4u][d % 4u];
      }
      ia += rem * p.strideA[OUTER / 4u][OUTER % 4u];
      ib += rem * p.strideB[OUTER / 4u][OUTER % 4u];
      let x = f32(a[ia]);
      let y = f32(b[ib]);
      var r: f32;
      switch p.op {
        case 0u: { r = x + y; }
        case 1u: { r = x - y; }
        case 2u: { r = x * y; }
        default: { r = x / y; }
      }
      out[i] = TOut(r);
    }
  }
}
