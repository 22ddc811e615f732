// dX of conv2d (conv2d.wgsl) as a transposed implicit GEMM, no atomics:
// dX[b, ci, ih, iw] = Σ_{co, kh, kw} W[co, ci, kh, kw] · dY[b, co, oh, ow] over the taps with
// ih = oh·strideH − padH + kh (and likewise for w). With stride s only the taps kh ≡ ih + padH
// (mod s) reach an input row, so the input pixels are split into s_h·s_w phase classes
// (ih mod s_h, iw mod s_w), one per workgroup z with the batch item: each class is a GEMM of
// rows ci × its pixels over K = Cout · (its taps), with no zero taps multiplied (a 3×3 stride-2
// kernel does 4, 2, 2 or 1 taps per class instead of 9).
// W: [Cout, Cin, KH, KW], dY: [B, Cout, Ho, Wo], dX: [B, Cin, H, W]. Tiling as conv2d.wgsl.
//!include tile_product.wgsl

struct Params {
  Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  KH: u32, KW: u32, strideH: u32, strideW: u32, padH: u32, padW: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<TW>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dx: array<TDx>;

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let classes = p.strideH * p.strideW;
  let b = wg.z / classes;
  // This class: input rows ih ≡ ph (mod strideH), columns iw ≡ pw (mod strideW).
  let ph = (wg.z % classes) / p.strideW;
  let pw = wg.z % p.strideW;
  if (ph >= p.H || pw >= p.W) { return; }
  let Hc = (p.H - ph + p.strideH - 1u) / p.strideH;
  let Wc = (p.W - pw + p.strideW - 1u) / p.strideW;
  let P = Hc * Wc;
  let pix0 = wg.x * TILE_MN;
  if (pix0 >= P) { return; } // the grid is sized for the largest class
  // Its taps: kh = kh0 + strideH·th for th < tapsH, reaching oh = i + baseH − th for class row i.
  let kh0 = (ph + p.padH) % p.strideH;
  let kw0 = (pw + p.padW) % p.strideW;
  let tapsH = select(0u, (p.KH - kh0 + p.strideH - 1u) / p.strideH, kh0 < p.KH);
  let tapsW = select(0u, (p.KW - kw0 + p.strideW - 1u) / p.strideW, kw0 < p.KW);
  let taps = tapsH * tapsW;
  let K = p.Cout * taps; // 0 when no tap reaches this class: the tile is written as zeros
  let baseH = i32((ph + p.padH - kh0) / p.strideH);
  let baseW = i32((pw + p.padW - kw0) / p.strideW);
  let ci0 = wg.y * TILE_MN;
  let dyBase = b * p.Cout * p.Ho * p.Wo;
  var acc: array<vec4<f32>, 16>;
  // Loading: thread li fills 4 k values of one group of 4 input channels and of 4 pixels.
  let q = li % 16u;
  let kq = (li / 16u) * 4u;
  var oh0: vec4<i32>;
  var ow0: vec4<i32>;
  var inside: vec4<bool>;
  for (var s = 0u; s < 4u; s++) {
    let pix = pix0 + q * 4u + s;
    inside[s] = pix < P;
    oh0[s] = i32(pix / Wc) + baseH;
    ow0[s] = i32(pix % Wc) + baseW;
  }
  let ci = ci0 + q * 4u;

  for (var k0 = 0u; k0 < K; k0 += TILE_K) {
    for (var t = 0u; t < 4u; t++) {
      let k = k0 + kq + t;
      let co = k / taps;
      let r = k % taps;
      let th = r / tapsW;
      let tw = r % tapsW;
      let kh = kh0 + th * p.strideH;
      let kw = kw0 + tw * p.strideW;
      var wv = vec4(0.0);
      for (var s = 0u; s < 4u; s++) {
        if (k < K && ci + s < p.Cin) { wv[s] = f32(w[((co * p.Cin + ci + s) * p.KH + kh) * p.KW + kw]); }
      }
      As[(kq + t) * 16u + q] = wv;
      let oh = oh0 - vec4(i32(th));
      let ow = ow0 - vec4(i32(tw));
      let ok = inside & (oh >= vec4(0)) & (ow >= vec4(0)) & (oh < vec4(i32(p.Ho))) & (ow < vec4(i32(p.Wo))) & vec4(k < K);
      let rowBase = dyBase + co * p.Ho * p.Wo;
      var v = vec4(0.0);
      for (var s = 0u; s < 4u; s++) {
        if (ok[s]) { v[s] = f32(dy[rowBase + u32(oh[s]) * p.Wo + u32(ow[s])]); }
      }
      Bs[(kq + t) * 16u + q] = v;
    }
    workgroupBarrier();
    accumulate_tiles(&acc, lid.y, lid.x);
    workgroupBarrier();
  }

  let dxBase = b * p.Cin * p.H * p.W;
  for (var i = 0u; i < 8u; i++) {
    let c = ci0 + (lid.y + 8u * (i / 4u)) * 4u + i % 4u;
    if (c >= p.Cin) { continue; }
    for (var j = 0u; j < 2u; j++) {
      let v4 = acc[(i / 4u) * 8u + (i % 4u) * 2u + j];
      for (var s = 0u; s < 4u; s++) {
        let pix = pix0 + (lid.x + 8u * j) * 4u + s;
        if (pix >= P) { break; }
        let ih = ph + (pix / Wc) * p.strideH;
        let iw = pw + (pix % Wc) * p.strideW;
        dx[dxBase + (c * p.H + ih) * p.W + iw] = TDx(v4[s]);
      }
    }
  }
}
