enable subgroups;
// matmul_tex.wgsl with packed f16 operands (f16 activations and weights): A and W are rgba32uint
// textures of 8 f16 values per texel (to_texture_h.wgsl), which halves the fetches per value
// (×1.1–1.3 over f32 texels in ../shared/design/lavapipe-kernels.md); f32 accumulation. Each
// k step unpacks a pair: even and odd k of the 16 columns. Same Params (K4 counts texels, of 8
// values here), dispatch and uniform epilogue.
//!include activations.wgsl

const R = 8u;
const G = 4u;
struct Params { M: u32, N: u32, K4: u32, wItemRows: u32, cBase: u32, cItem: u32, alpha: f32, hasBias: u32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<TBias>;
@group(0) @binding(2) var<storage, read_write> c: array<TC>;
@group(0) @binding(3) var at: texture_2d<u32>;
@group(0) @binding(4) var wt: texture_2d<u32>;

// Two k (2kp, 2kp + 1): W[n0 + j, pair kp] lives in lane j % 8 of x(j / 8), times this lane's R A pairs.
fn kstep(acc: ptr<function, array<array<vec4<f32>, G>, R>>, a: ptr<function, array<vec4<u32>, R>>, kp: u32, x0: u32, x1: u32) {
  // subgroupBroadcast takes a constant lane: written out.
  let q = array<vec2<f32>, 16>(
    unpack2x16float(subgroupBroadcast(x0, 0u)), unpack2x16float(subgroupBroadcast(x0, 1u)),
    unpack2x16float(subgroupBroadcast(x0, 2u)), unpack2x16float(subgroupBroadcast(x0, 3u)),
    unpack2x16float(subgroupBroadcast(x0, 4u)), unpack2x16float(subgroupBroadcast(x0, 5u)),
    unpack2x16float(subgroupBroadcast(x0, 6u)), unpack2x16float(subgroupBroadcast(x0, 7u)),
    unpack2x16float(subgroupBroadcast(x1, 0u)), unpack2x16float(subgroupBroadcast(x1, 1u)),
    unpack2x16float(subgroupBroadcast(x1, 2u)), unpack2x16float(subgroupBroadcast(x1, 3u)),
    unpack2x16float(subgroupBroadcast(x1, 4u)), unpack2x16float(subgroupBroadcast(x1, 5u)),
    unpack2x16float(subgroupBroadcast(x1, 6u)), unpack2x16float(subgroupBroadcast(x1, 7u)));
  let be = array<vec4<f32>, G>(vec4(q[0].x, q[1].x, q[2].x, q[3].x), vec4(q[4].x, q[5].x, q[6].x, q[7].x),
    vec4(q[8].x, q[9].x, q[10].x, q[11].x), vec4(q[12].x, q[13].x, q[14].x, q[15].x));
  let bo = array<vec4<f32>, G>(vec4(q[0].y, q[1].y, q[2].y, q[3].y), vec4(q[4].y, q[5].y, q[6].y, q[7].y),
    vec4(q[8].y, q[9].y, q[10].y, q[11].y), vec4(q[12].y, q[13].y, q[14].y, q[15].y));
  for (var r = 0u; r < R; r++) {
    let ar = unpack2x16float((*a)[r][kp]);
    for (var g = 0u; g < G; g++) { (*acc)[r][g] += ar.x * be[g] + ar.y * bo[g]; }
  }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sl: u32) {
  let n0 = wg.x * 4u * G;
  let mb = wg.y * 8u * R;
  let aRow0 = wg.z * p.M;
  let wRow0 = wg.z * p.wItemRows;
  // Lanes past the edge fetch the last row again (clamped) and their results are not stored.
  let wn0 = wRow0 + min(n0 + sl, p.N - 1u);
  let wn1 = wRow0 + min(n0 + 8u + sl, p.N - 1u);
  var acc: array<array<vec4<f32>, G>, R>;
  for (var kv = 0u; kv < p.K4; kv++) {
    var a: array<vec4<u32>, R>;
    for (var r = 0u; r < R; r++) { a[r] = textureLoad(at, vec2u(kv, aRow0 + min(mb + 8u * r + sl, p.M - 1u)), 0); }
    let w0 = textureLoad(wt, vec2u(kv, wn0), 0);
    let w1 = textureLoad(wt, vec2u(kv, wn1), 0);
    kstep(&acc, &a, 0u, w0.x, w1.x);
    kstep(&acc, &a, 1u, w0.y, w1.y);
    kstep(&acc, &a, 2u, w0.z, w1.z);
    kstep(&acc, &a, 3u, w0.w, w1.w);
  }
  let cItem = p.cBase + wg.z * p.cItem;
  // The 16 columns' bias read once, not once per element under the uniform branch.
  var bv: array<vec4<f32>, G>;
  if (p.hasBias != 0u) {
    for (var g = 0u; g < G; g++) {
      for (var s = 0u; s < 4u; s++) { bv[g][s] = f32(bias[min(n0 + 4u * g + s, p.N - 1u)]); }
    }
  }
  for (var r = 0u; r < R; r++) {
    let m = mb + 8u * r + sl;
    if (m >= p.M) { continue; }
    for (var g = 0u; g < G; g++) {
      for (var s = 0u; s < 4u; s++) {
        let n = n0 + 4u * g + s;
        if (n >= p.N) { break; }
        c[cItem + m * p.N + n] = TC(activate(acc[r][g][s] + bv[g][s], p.act, p.alpha));
      }
    }
  }
}
