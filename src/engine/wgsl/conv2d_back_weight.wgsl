// dW of conv2d (conv2d.wgsl) as a GEMM over batch and output pixels, no atomics:
// dW[co, (ci, kh, kw)] = Σ_{r = (b, oh, ow)} dY[b, co, oh, ow] · X̂[b, ci, oh·strideH − padH + kh, ow·strideW − padW + kw]
// with X̂ the zero-padded input, read on the fly. The reduction over r is cut into chunks of
// rChunk (a multiple of TILE_K), one per workgroup z, when the output alone has too few tiles
// to fill the GPU; chunk z writes its partial sum to dw[z] and a column sum adds them up.
// X: [B, Cin, H, W], dY: [B, Cout, Ho, Wo], dW: [chunks, Cout, Cin·KH·KW]. Tiling as conv2d.wgsl.
//!include tile_product.wgsl

struct Params {
  B: u32, Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  KH: u32, KW: u32, strideH: u32, strideW: u32, padH: u32, padW: u32, rChunk: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> dy: array<TDy>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  // As holds dY [r][co/4], Bs input patches [r][col/4] (tile_product.wgsl).
  let Kc = p.Cin * p.KH * p.KW;
  let P = p.Ho * p.Wo;
  let R = p.B * P;
  let co0 = wg.y * TILE_MN;
  let col0 = wg.x * TILE_MN;
  let rBegin = wg.z * p.rChunk;
  let rEnd = min(R, rBegin + p.rChunk);
  var acc: array<vec4<f32>, 16>;
  // Loading: thread li fills 4 r values of one group of 4 output channels and of 4 columns.
  let q = li % 16u;
  let kq = (li / 16u) * 4u;
  let co = co0 + q * 4u;
  // The 4 columns this thread loads, fixed for the whole reduction: channel plane and tap.
  var plane: vec4<u32>;
  var kh: vec4<i32>;
  var kw: vec4<i32>;
  var colOk: vec4<bool>;
  for (var s = 0u; s < 4u; s++) {
    let col = col0 + q * 4u + s;
    colOk[s] = col < Kc;
    plane[s] = (col / (p.KH * p.KW)) * p.H * p.W;
    kh[s] = i32((col / p.KW) % p.KH) - i32(p.padH);
    kw[s] = i32(col % p.KW) - i32(p.padW);
  }

  for (var r0 = rBegin; r0 < rEnd; r0 += TILE_K) {
    for (var t = 0u; t < 4u; t++) {
      let r = r0 + kq + t;
      let rOk = r < rEnd;
      let b = r / P;
      let pix = r % P;
      let dyBase = (b * p.Cout + co) * P + pix;
      var dv = vec4(0.0);
      for (var s = 0u; s < 4u; s++) {
        if (rOk && co + s < p.Cout) { dv[s] = f32(dy[dyBase + s * P]); }
      }
      As[(kq + t) * 16u + q] = dv;
      let ih = vec4(i32((pix / p.Wo) * p.strideH)) + kh;
      let iw = vec4(i32((pix % p.Wo) * p.strideW)) + kw;
      let ok = colOk & vec4(rOk) & (ih >= vec4(0)) & (iw >= vec4(0)) & (ih < vec4(i32(p.H))) & (iw < vec4(i32(p.W)));
      let xBase = b * p.Cin * p.H * p.W;
      var v = vec4(0.0);
      for (var s = 0u; s < 4u; s++) {
        if (ok[s]) { v[s] = f32(x[xBase + plane[s] + u32(ih[s]) * p.W + u32(iw[s])]); }
      }
      Bs[(kq + t) * 16u + q] = v;
    }
    workgroupBarrier();
    accumulate_tiles(&acc, lid.y, lid.x);
    workgroupBarrier();
  }

  let dwBase = wg.z * p.Cout * Kc;
  for (var i = 0u; i < 8u; i++) {
    let c = co0 + (lid.y + 8u * (i / 4u)) * 4u + i % 4u;
    if (c >= p.Cout) { continue; }
    for (var j = 0u; j < 2u; j++) {
      let v4 = acc[(i / 4u) * 8u + (i % 4u) * 2u + j];
      for (var s = 0u; s < 4u; s++) {
        let col = col0 + (lid.x + 8u * j) * 4u + s;
        if (col >= Kc) { break; }
        dw[dwBase + c * Kc + col] = v4[s];
      }
    }
  }
}
