// 2-D convolution as an implicit GEMM (no im2col buffer): for each batch item,
// Y[co, pix] = act(Σ_k W[co, k] · X̂[k, pix] + bias[co]) with k = (ci, kh, kw) and
// X̂ the zero-padded input patch element, computed on the fly from X.
// X: [B, Cin, H, W], W: [Cout, Cin, KH, KW] (PyTorch layout), Y: [B, Cout, Ho, Wo].
// Same 64×64 tiling as matmul.wgsl. Defines: HAS_BIAS, ACT.
//!include activations.wgsl

struct Params {
  Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  KH: u32, KW: u32, strideH: u32, strideW: u32, padH: u32, padW: u32, alpha: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> w: array<TW>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> y: array<TY>;

const TILE = 64u;
const TK = 16u;
var<workgroup> As: array<vec4<f32>, 256>; // weights [k][co/4]
var<workgroup> Bs: array<vec4<f32>, 256>; // patches [k][pix/4]

fn load_w(co: u32, k: u32, K: u32) -> f32 {
  if (co < p.Cout && k < K) { return f32(w[co * K + k]); }
  return 0.0;
}

fn load_x(xBase: u32, k: u32, pix: u32, K: u32) -> f32 {
  if (k >= K || pix >= p.Ho * p.Wo) { return 0.0; }
  let kk = p.KH * p.KW;
  let ci = k / kk;
  let r = k % kk;
  let ih = i32((pix / p.Wo) * p.strideH + r / p.KW) - i32(p.padH);
  let iw = i32((pix % p.Wo) * p.strideW + r % p.KW) - i32(p.padW);
  if (ih < 0 || iw < 0 || ih >= i32(p.H) || iw >= i32(p.W)) { return 0.0; }
  return f32(x[xBase + (ci * p.H + u32(ih)) * p.W + u32(iw)]);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let K = p.Cin * p.KH * p.KW;
  let P = p.Ho * p.Wo;
  let co0 = wg.y * TILE;
  let pix0 = wg.x * TILE;
  let xBase = wg.z * p.Cin * p.H * p.W;
  var acc: array<vec4<f32>, 4>;

  for (var k0 = 0u; k0 < K; k0 += TK) {
    let k = li % TK;
    let q = li / TK;
    let co = co0 + q * 4u;
    As[k * 16u + q] = vec4(load_w(co, k0 + k, K), load_w(co + 1u, k0 + k, K),
                           load_w(co + 2u, k0 + k, K), load_w(co + 3u, k0 + k, K));
    let pix = pix0 + q * 4u;
    Bs[k * 16u + q] = vec4(load_x(xBase, k0 + k, pix, K), load_x(xBase, k0 + k, pix + 1u, K),
                           load_x(xBase, k0 + k, pix + 2u, K), load_x(xBase, k0 + k, pix + 3u, K));
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let av = As[kk * 16u + lid.y];
      let bv = Bs[kk * 16u + lid.x];
      acc[0] += av.x * bv;
      acc[1] += av.y * bv;
      acc[2] += av.z * bv;
      acc[3] += av.w * bv;
    }
    workgroupBarrier();
  }

  let yBase = wg.z * p.Cout * P;
  for (var i = 0u; i < 4u; i++) {
    let co = co0 + lid.y * 4u + i;
    if (co >= p.Cout) { break; }
    for (var j = 0u; j < 4u; j++) {
      let pix = pix0 + lid.x * 4u + j;
      if (pix >= P) { break; }
      var v = acc[i][j];
      if (HAS_BIAS) { v += f32(bias[co]); }
      y[yBase + co * P + pix] = TY(activate(v, ACT, p.alpha));
    }
  }
}
