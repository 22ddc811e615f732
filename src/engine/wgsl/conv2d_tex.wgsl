enable subgroups;
// 2-D convolution as an implicit GEMM for CPU adapters (kernels.ts), the texture matmul's scheme
// (matmul_tex.wgsl) with output channels as rows and output pixels as columns:
// Y[b, co, pix] = act(Σ_{tap, ci} W[co, ci, tap] · X[b, ci, pixel's input at tap] + bias[co]).
// wt: [Cout rows, taps·Cin4 texels], texel (tap·Cin4 + c, co) = W[co, 4c .. 4c + 3, kh, kw].
// xt: channels-last input, [items·H rows, W·Cin4 texels], texel (iw·Cin4 + c, item·H + ih) =
// X[item, 4c .. 4c + 3, ih, iw] (to_texture.wgsl; channels past Cin are 0). No im2col: lane l
// fetches the input texels of pixels p0 + l and p0 + 8 + l at each tap (zero where the tap falls
// in the padding) and the subgroup shares them by subgroupBroadcast; each lane fetches its own
// 8 weight rows. Dispatch (ceil(Ho·Wo / 16), ceil(Cout / 64), items); y written from item y0.
// The epilogue (hasBias, act: activations.wgsl) is uniform: one pipeline serves every bias and activation.
//!include activations.wgsl

const R = 8u;
const G = 4u;
struct Params {
  Cout: u32, H: u32, W: u32, Ho: u32, Wo: u32, KW: u32, taps: u32, Cin4: u32,
  strideH: u32, strideW: u32, padH: u32, padW: u32, y0: u32, alpha: f32, hasBias: u32, act: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<TBias>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;
@group(0) @binding(3) var xt: texture_2d<f32>;
@group(0) @binding(4) var wt: texture_2d<f32>;

// One k: the 16 pixel values (x0 of lanes 0..7, x1 of lanes 0..7) times this lane's R weights.
fn kstep(acc: ptr<function, array<array<vec4<f32>, G>, R>>, a: ptr<function, array<vec4<f32>, R>>, kk: u32, x0: f32, x1: f32) {
  let b = array<vec4<f32>, G>(
    vec4(subgroupBroadcast(x0, 0u), subgroupBroadcast(x0, 1u), subgroupBroadcast(x0, 2u), subgroupBroadcast(x0, 3u)),
    vec4(subgroupBroadcast(x0, 4u), subgroupBroadcast(x0, 5u), subgroupBroadcast(x0, 6u), subgroupBroadcast(x0, 7u)),
    vec4(subgroupBroadcast(x1, 0u), subgroupBroadcast(x1, 1u), subgroupBroadcast(x1, 2u), subgroupBroadcast(x1, 3u)),
    vec4(subgroupBroadcast(x1, 4u), subgroupBroadcast(x1, 5u), subgroupBroadcast(x1, 6u), subgroupBroadcast(x1, 7u)));
  for (var r = 0u; r < R; r++) {
    let ar = (*a)[r][kk];
    for (var g = 0u; g < G; g++) { (*acc)[r][g] += ar * b[g]; }
  }
}

// Where pixel q reads its input at tap (kh, kw): texel column and row of channel texel 0, and
// whether the tap lies inside the image (else it reads zeros).
fn tap_source(item: u32, q: u32, kh: u32, kw: u32) -> vec3u {
  let ih = i32((q / p.Wo) * p.strideH + kh) - i32(p.padH);
  let iw = i32((q % p.Wo) * p.strideW + kw) - i32(p.padW);
  let inside = ih >= 0 && ih < i32(p.H) && iw >= 0 && iw < i32(p.W);
  let row = item * p.H + u32(clamp(ih, 0, i32(p.H) - 1));
  return vec3u(u32(clamp(iw, 0, i32(p.W) - 1)) * p.Cin4, row, select(0u, 1u, inside));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_invocation_id) sl: u32) {
  let P = p.Ho * p.Wo;
  let p0 = wg.x * 4u * G;
  let cb = wg.y * 8u * R;
  let q0 = min(p0 + sl, P - 1u);
  let q1 = min(p0 + 8u + sl, P - 1u);
  var acc: array<array<vec4<f32>, G>, R>;
  for (var tap = 0u; tap < p.taps; tap++) {
    let kh = tap / p.KW;
    let kw = tap % p.KW;
    let s0 = tap_source(wg.z, q0, kh, kw);
    let s1 = tap_source(wg.z, q1, kh, kw);
    let k0 = tap * p.Cin4;
    for (var c = 0u; c < p.Cin4; c++) {
      var a: array<vec4<f32>, R>;
      for (var r = 0u; r < R; r++) { a[r] = textureLoad(wt, vec2u(k0 + c, min(cb + 8u * r + sl, p.Cout - 1u)), 0); }
      let x0 = select(vec4<f32>(0.0), textureLoad(xt, vec2u(s0.x + c, s0.y), 0), s0.z == 1u);
      let x1 = select(vec4<f32>(0.0), textureLoad(xt, vec2u(s1.x + c, s1.y), 0), s1.z == 1u);
      kstep(&acc, &a, 0u, x0.x, x1.x);
      kstep(&acc, &a, 1u, x0.y, x1.y);
      kstep(&acc, &a, 2u, x0.z, x1.z);
      kstep(&acc, &a, 3u, x0.w, x1.w);
    }
  }
  let yItem = (p.y0 + wg.z) * p.Cout * P;
  for (var r = 0u; r < R; r++) {
    let co = cb + 8u * r + sl;
    if (co >= p.Cout) { continue; }
    var bv = 0.0;
    if (p.hasBias != 0u) { bv = f32(bias[co]); }
    for (var g = 0u; g < G; g++) {
      for (var s = 0u; s < 4u; s++) {
        let q = p0 + 4u * g + s;
        if (q >= P) { break; }
        y[yItem + co * P + q] = TY(activate(acc[r][g][s] + bv, p.act, p.alpha));
      }
    }
  }
}
