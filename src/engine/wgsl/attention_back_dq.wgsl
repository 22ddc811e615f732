// Attention backward, dQ (FlashAttention-2's query pass): like the forward, one thread
// per query row of one head streams over shared K/V tiles, recomputing each
// probability from the forward's row log-sum-exp instead of storing any Lq×Lk matrix:
// p = exp(scale·q·k − lse), ds = p·(dO·v − D) with D = dO·O of the row, dq = scale·Σ ds·k.
// q/k/v as in attention.wgsl (strided rows, offsets); o, dout, dq: [B, Lq, heads·HEAD_DIM];
// lse: [B, heads, Lq] (in units of the scaled scores). Defines: HEAD_DIM, KEYS, CAUSAL.
struct Params {
  heads: u32, Lq: u32, Lk: u32,
  qStride: u32, kStride: u32, vStride: u32,
  qOff: u32, kOff: u32, vOff: u32,
  scale: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<TQ>;
@group(0) @binding(2) var<storage, read> k: array<TK>;
@group(0) @binding(3) var<storage, read> v: array<TV>;
@group(0) @binding(4) var<storage, read> o: array<TO>;
@group(0) @binding(5) var<storage, read> lse: array<TLse>;
@group(0) @binding(6) var<storage, read> dout: array<TDout>;
@group(0) @binding(7) var<storage, read_write> dq: array<TDq>;

const QUERIES = 64u;
var<workgroup> Ks: array<f32, KEYS * HEAD_DIM>;
var<workgroup> Vs: array<f32, KEYS * HEAD_DIM>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.y;
  let bIdx = wg.z;
  let qi = wg.x * QUERIES + li;
  let valid = qi < p.Lq;

  var qv: array<f32, HEAD_DIM>;
  var dov: array<f32, HEAD_DIM>;
  var acc: array<f32, HEAD_DIM>;
  var rowLse = 0.0;
  var delta = 0.0;
  if (valid) {
    let qBase = (bIdx * p.Lq + qi) * p.qStride + p.qOff + h * HEAD_DIM;
    let oBase = (bIdx * p.Lq + qi) * p.heads * HEAD_DIM + h * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d++) {
      qv[d] = f32(q[qBase + d]) * p.scale;
      dov[d] = f32(dout[oBase + d]);
      delta += dov[d] * f32(o[oBase + d]);
    }
    rowLse = f32(lse[(bIdx * p.heads + h) * p.Lq + qi]);
  }
  var kEnd = p.Lk;
  if (CAUSAL) { kEnd = min(p.Lk, wg.x * QUERIES + QUERIES); }

  for (var k0 = 0u; k0 < kEnd; k0 += KEYS) {
    for (var e = li; e < KEYS * HEAD_DIM; e += QUERIES) {
      let key = k0 + e / HEAD_DIM;
      let d = e % HEAD_DIM;
      var kx = 0.0;
      var vx = 0.0;
      if (key < p.Lk) {
        let row = bIdx * p.Lk + key;
        kx = f32(k[row * p.kStride + p.kOff + h * HEAD_DIM + d]);
        vx = f32(v[row * p.vStride + p.vOff + h * HEAD_DIM + d]);
      }
      Ks[e] = kx;
      Vs[e] = vx;
    }
    workgroupBarrier();
    if (valid) {
      var last = min(KEYS, p.Lk - k0);
      if (CAUSAL) { last = min(last, select(0u, qi + 1u - k0, qi + 1u > k0)); }
      for (var j = 0u; j < last; j++) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
          s += qv[d] * Ks[j * HEAD_DIM + d];
          dp += dov[d] * Vs[j * HEAD_DIM + d];
        }
        let ds = exp(s - rowLse) * (dp - delta);
        for (var d = 0u; d < HEAD_DIM; d++) { acc[d] += ds * Ks[j * HEAD_DIM + d]; }
      }
    }
    workgroupBarrier();
  }

  if (valid) {
    let base = (bIdx * p.Lq + qi) * p.heads * HEAD_DIM + h * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d++) { dq[base + d] = TDq(acc[d] * p.scale); }
  }
}
