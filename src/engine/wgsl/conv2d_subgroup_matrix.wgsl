// conv2d.wgsl's implicit GEMM, Y[co, pix] = act(Σ_k W[co, k] · X̂[k, pix] + bias[co]) with
// k = (ci, kh, kw), for f16 X and W on the GPU's matrix units through Dawn's subgroup matrices,
// accumulated in f32: matmul_subgroup_matrix.wgsl's scheme (see there) with W as the left operand
// and the zero-padded input patches X̂, gathered from X as they are staged, as the right one.
// X: [B, Cin, H, W], W: [Cout, Cin, KH, KW], Y: [B, Cout, Ho, Wo]; workgroup z = batch item.
// The epilogue (hasBias, act) is uniform, as in conv2d.wgsl. Defines: SM, WG.
enable chromium_experimental_subgroup_matrix;
enable subgroups;
//!include activations.wgsl

struct Params {
  Cin: u32, H: u32, W: u32, Cout: u32, Ho: u32, Wo: u32,
  KH: u32, KW: u32, strideH: u32, strideW: u32, padH: u32, padW: u32, alpha: f32, hasBias: u32, act: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read> w: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> y: array<TY>;

const TILE = 64u;
const TK = 32u;
const R = 32u / SM;

var<workgroup> As: array<f16, TILE * TK>; // W [co][k], stride TK
var<workgroup> Bs: array<f16, TK * TILE>; // X̂ [k][pix], stride TILE
var<workgroup> Cs: array<f32, 4u * SM * SM>;

@compute @workgroup_size(WG)
@diagnostic(off, chromium_experimental.subgroup_matrix_uniformity)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg: u32) {
  let K = p.Cin * p.KH * p.KW;
  let P = p.Ho * p.Wo;
  let kk2 = p.KH * p.KW;
  let co0 = wg.y * TILE;
  let pix0 = wg.x * TILE;
  let xBase = wg.z * p.Cin * p.H * p.W;
  let qr = (sg / 2u) * 32u;
  let qc = (sg % 2u) * 32u;

  var acc: array<subgroup_matrix_result<f32, SM, SM>, R * R>;
  for (var t = 0u; t < R * R; t++) { acc[t] = subgroup_matrix_result<f32, SM, SM>(); }

  for (var k0 = 0u; k0 < K; k0 += TK) {
    // Consecutive invocations read consecutive k of a weight row, consecutive pixels of an input row.
    for (var e = li; e < TILE * TK; e += WG) {
      let co = co0 + e / TK;
      let k = k0 + e % TK;
      var v = f16(0.0);
      if (co < p.Cout && k < K) { v = w[co * K + k]; }
      As[e] = v;
    }
    for (var e = li; e < TK * TILE; e += WG) {
      let k = k0 + e / TILE;
      let pix = pix0 + e % TILE;
      var v = f16(0.0);
      if (pix < P && k < K) {
        let r = k % kk2;
        let ih = i32((pix / p.Wo) * p.strideH + r / p.KW) - i32(p.padH);
        let iw = i32((pix % p.Wo) * p.strideW + r % p.KW) - i32(p.padW);
        if (ih >= 0 && iw >= 0 && ih < i32(p.H) && iw < i32(p.W)) {
          v = x[xBase + ((k / kk2) * p.H + u32(ih)) * p.W + u32(iw)];
        }
      }
      Bs[e] = v;
    }
    workgroupBarrier();
    if (sg < 4u) {
      for (var ks = 0u; ks < TK; ks += SM) {
        var right: array<subgroup_matrix_right<f16, SM, SM>, R>;
        for (var j = 0u; j < R; j++) {
          right[j] = subgroupMatrixLoad<subgroup_matrix_right<f16, SM, SM>, row_major>(&Bs, ks * TILE + qc + j * SM, TILE);
        }
        for (var i = 0u; i < R; i++) {
          let left = subgroupMatrixLoad<subgroup_matrix_left<f16, SM, SM>, row_major>(&As, (qr + i * SM) * TK + ks, TK);
          for (var j = 0u; j < R; j++) {
            acc[i * R + j] = subgroupMatrixMultiplyAccumulate(left, right[j], acc[i * R + j]);
          }
        }
      }
    }
    workgroupBarrier();
  }

  let yBase = wg.z * p.Cout * P;
  for (var t = 0u; t < R * R; t++) {
    if (sg < 4u) { subgroupMatrixStore<row_major>(&Cs, sg * SM * SM, acc[t], SM); }
    workgroupBarrier();
    for (var e = li; e < 4u * SM * SM; e += WG) {
      let q = e / (SM * SM);
      let s = e % (SM * SM);
      let co = co0 + (q / 2u) * 32u + (t / R) * SM + s / SM;
      let pix = pix0 + (q % 2u) * 32u + (t % R) * SM + s % SM;
      if (co < p.Cout && pix < P) {
        var v = Cs[e];
        if (p.hasBias != 0u) { v += f32(bias[co]); }
        y[yBase + co * P + pix] = TY(activate(v, p.act, p.alpha));
      }
    }
    workgroupBarrier();
  }
}
