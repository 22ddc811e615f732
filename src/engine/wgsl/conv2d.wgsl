// 2-D convolution as an implicit GEMM (no im2col buffer): for each batch item,
// Y[co, pix] = act(Σ_k W[co, k] · X̂[k, pix] + bias[co]) with k = (ci, kh, kw) and
// X̂ the zero-padded input patch element, computed on the fly from X.
// X: [B, Cin, H, W], W: [Cout, Cin, KH, KW] (PyTorch layout), Y: [B, Cout, Ho, Wo].
// Same tiling as matmul.wgsl: 64×64 output tile, 8×8 threads computing 8×8 outputs
// each. The epilogue (hasBias, act) is uniform: one pipeline serves every bias and activation.
//!include activations.wgsl
//!include tile_product.wgsl

struct Params {
  Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  KH: u32, KW: u32, strideH: u32, strideW: u32, padH: u32, padW: u32, alpha: f32, hasBias: u32, act: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> w: array<TW>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> y: array<TY>;

fn load_w(co: u32, k: u32, K: u32) -> f32 {
  if (co < p.Cout && k < K) { return f32(w[co * K + k]); }
  return 0.0;
}

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  // As holds weights [k][co/4], Bs input patches [k][pix/4] (tile_product.wgsl).
  let K = p.Cin * p.KH * p.KW;
  let P = p.Ho * p.Wo;
  let kk2 = p.KH * p.KW;
  let co0 = wg.y * TILE_MN;
  let pix0 = wg.x * TILE_MN;
  let xBase = wg.z * p.Cin * p.H * p.W;
  var acc: array<vec4<f32>, 16>;
  // Loading: thread li fills 4 k values of one group of 4 output channels and of 4 pixels.
  let q = li % 16u;
  let kq = (li / 16u) * 4u;
  // The 4 pixels this thread loads: top-left input corner of each, or a sentinel when outside.
  var ih0: vec4<i32>;
  var iw0: vec4<i32>;
  var inside: vec4<bool>;
  for (var s = 0u; s < 4u; s++) {
    let pix = pix0 + q * 4u + s;
    inside[s] = pix < P;
    ih0[s] = i32((pix / p.Wo) * p.strideH) - i32(p.padH);
    iw0[s] = i32((pix % p.Wo) * p.strideW) - i32(p.padW);
  }
  let co = co0 + q * 4u;

  for (var k0 = 0u; k0 < K; k0 += TILE_K) {
    for (var t = 0u; t < 4u; t++) {
      let k = k0 + kq + t;
      As[(kq + t) * 16u + q] = vec4(load_w(co, k, K), load_w(co + 1u, k, K), load_w(co + 2u, k, K), load_w(co + 3u, k, K));
      let ci = k / kk2;
      let r = k % kk2;
      let ih = ih0 + vec4(i32(r / p.KW));
      let iw = iw0 + vec4(i32(r % p.KW));
      let ok = inside & (ih >= vec4(0)) & (iw >= vec4(0)) & (ih < vec4(i32(p.H))) & (iw < vec4(i32(p.W))) & vec4(k < K);
      let rowBase = xBase + ci * p.H * p.W;
      var v = vec4(0.0);
      for (var s = 0u; s < 4u; s++) {
        if (ok[s]) { v[s] = f32(x[rowBase + u32(ih[s]) * p.W + u32(iw[s])]); }
      }
      Bs[(kq + t) * 16u + q] = v;
    }
    workgroupBarrier();
    accumulate_tiles(&acc, lid.y, lid.x);
    workgroupBarrier();
  }

  let yBase = wg.z * p.Cout * P;
  for (var i = 0u; i < 8u; i++) {
    let c = co0 + (lid.y + 8u * (i / 4u)) * 4u + i % 4u;
    if (c >= p.Cout) { continue; }
    var bv = 0.0;
    if (p.hasBias != 0u) { bv = f32(bias[c]); }
    for (var j = 0u; j < 2u; j++) {
      let v4 = acc[(i / 4u) * 8u + (i % 4u) * 2u + j];
      for (var s = 0u; s < 4u; s++) {
        let pix = pix0 + (lid.x + 8u * j) * 4u + s;
        if (pix >= P) { break; }
        y[yBase + c * P + pix] = TY(activate(v4[s] + bv, p.act, p.alpha));
      }
    }
  }
}
