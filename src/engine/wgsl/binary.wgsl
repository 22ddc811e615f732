// out = a OP b with NumPy broadcasting, up to 8 dimensions: the host passes the
// output shape and each input's strides (0 on broadcast axes). op: 0 add, 1 sub,
// 2 mul, 3 div, a uniform (one pipeline for all four).
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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var d = 7; d >= 0; d--) {
    let size = p.shape[d / 4][d % 4];
    let idx = rem % size;
    rem /= size;
    ia += idx * p.strideA[d / 4][d % 4];
    ib += idx * p.strideB[d / 4][d % 4];
  }
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
