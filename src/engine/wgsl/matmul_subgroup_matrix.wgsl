// C[b] = act(op(A[b]) · op(B[b]) + bias) for f16 A and B on the GPU's matrix units (tensor
// cores), through Dawn's subgroup matrices: the only way WGSL reaches them. Same operands,
// layouts, batch strides, K splits and epilogue as matmul.wgsl (see there); products are
// accumulated in f32 (an f16 × f16 → f32 configuration of the adapter, SM × SM × SM).
// A 64×64 output tile per workgroup: the operands go through workgroup memory (64×32 of A and
// 32×64 of B per K step, loaded with bounds checks and zero padding, so any shape and either
// layout works and no subgroupMatrixLoad reads outside a buffer), and subgroups 0..3 each
// multiply one 32×32 quadrant as (32/SM)² result matrices. The results pass through workgroup
// memory once more for the epilogue, which every invocation applies element by element.
// Defines: TRANS_A, TRANS_B, SM (8 or 16: the configuration's
// M = N = K), WG (4 × the adapter's largest subgroup: WGSL wants a multiple of it; with
// smaller subgroups the ones past 3 only load and store).
enable chromium_experimental_subgroup_matrix;
enable subgroups;
//!include activations.wgsl

struct Params { M: u32, N: u32, K: u32, strideA: u32, strideB: u32, strideC: u32, alpha: f32, batch: u32, kChunk: u32, hasBias: u32, act: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<TBias>;
@group(0) @binding(4) var<storage, read_write> c: array<TC>;

const TILE = 64u;
const TK = 32u;
// Result matrices per quadrant side.
const R = 32u / SM;

var<workgroup> As: array<f16, TILE * TK>; // [row][k], row-major, stride TK
var<workgroup> Bs: array<f16, TK * TILE>; // [k][col], row-major, stride TILE
var<workgroup> Cs: array<f32, 4u * SM * SM>; // one SM×SM result of each quadrant

// The diagnostic is about subgroup uniformity: the matrix calls depend on subgroup_id, which is
// uniform in each subgroup, and the WGSL analysis only knows workgroup uniformity.
@compute @workgroup_size(WG)
@diagnostic(off, chromium_experimental.subgroup_matrix_uniformity)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg: u32) {
  let row0 = wg.y * TILE;
  let col0 = wg.x * TILE;
  let item = wg.z % p.batch;
  let kBegin = (wg.z / p.batch) * p.kChunk;
  let kEnd = min(p.K, kBegin + p.kChunk);
  let aBase = item * p.strideA;
  let bBase = item * p.strideB;
  let qr = (sg / 2u) * 32u;
  let qc = (sg % 2u) * 32u;

  var acc: array<subgroup_matrix_result<f32, SM, SM>, R * R>;
  for (var t = 0u; t < R * R; t++) { acc[t] = subgroup_matrix_result<f32, SM, SM>(); }

  for (var k0 = kBegin; k0 < kEnd; k0 += TK) {
    // Consecutive invocations read consecutive addresses of whichever layout the operand has.
    for (var e = li; e < TILE * TK; e += WG) {
      let r = select(e / TK, e % TILE, TRANS_A);
      let kk = select(e % TK, e / TILE, TRANS_A);
      let m = row0 + r;
      let k = k0 + kk;
      var v = f16(0.0);
      if (m < p.M && k < kEnd) {
        if (TRANS_A) { v = a[aBase + k * p.M + m]; } else { v = a[aBase + m * p.K + k]; }
      }
      As[r * TK + kk] = v;
    }
    for (var e = li; e < TK * TILE; e += WG) {
      let n = select(e % TILE, e / TK, TRANS_B);
      let kk = select(e / TILE, e % TK, TRANS_B);
      let col = col0 + n;
      let k = k0 + kk;
      var v = f16(0.0);
      if (col < p.N && k < kEnd) {
        if (TRANS_B) { v = b[bBase + col * p.K + k]; } else { v = b[bBase + k * p.N + col]; }
      }
      Bs[kk * TILE + n] = v;
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

  let cBase = wg.z * p.strideC;
  for (var t = 0u; t < R * R; t++) {
    if (sg < 4u) { subgroupMatrixStore<row_major>(&Cs, sg * SM * SM, acc[t], SM); }
    workgroupBarrier();
    for (var e = li; e < 4u * SM * SM; e += WG) {
      let q = e / (SM * SM);
      let w = e % (SM * SM);
      let m = row0 + (q / 2u) * 32u + (t / R) * SM + w / SM;
      let n = col0 + (q % 2u) * 32u + (t % R) * SM + w % SM;
      if (m < p.M && n < p.N) {
        var v = Cs[e];
        if (p.hasBias != 0u) { v += f32(bias[n]); }
        c[cBase + m * p.N + n] = TC(activate(v, p.act, p.alpha));
      }
    }
    workgroupBarrier();
  }
}
