// Attention backward, dK and dV (FlashAttention-2's key pass): one thread per key row
// of one head keeps its k, v and the dk, dv accumulators in registers and streams over
// shared tiles of ROWS query rows (q, dO, the forward's row log-sum-exp, D = dO·O),
// recomputing each probability instead of storing any Lq×Lk matrix:
// p = exp(scale·q·k − lse), dv = Σ p·dO, dk = scale·Σ p·(dO·v − D)·q.
// Each thread owns its key, so no atomics; dq comes from attention_back_dq.wgsl.
// q/k/v as in attention.wgsl (strided rows, offsets); o, dout: [B, Lq, heads·HEAD_DIM];
// lse: [B, heads, Lq]; dk, dv: [B, Lk, heads·HEAD_DIM]. Defines: HEAD_DIM, ROWS, CAUSAL.
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
@group(0) @binding(7) var<storage, read_write> dk: array<TDk>;
@group(0) @binding(8) var<storage, read_write> dv: array<TDv>;

const KEYS = 64u;
var<workgroup> Qs: array<f32, ROWS * HEAD_DIM>;
var<workgroup> Os: array<f32, ROWS * HEAD_DIM>;
var<workgroup> rowLse: array<f32, ROWS>;
var<workgroup> rowDelta: array<f32, ROWS>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.y;
  let bIdx = wg.z;
  let kj = wg.x * KEYS + li;
  let valid = kj < p.Lk;
  let W = p.heads * HEAD_DIM;

  var kv: array<f32, HEAD_DIM>;
  var vv: array<f32, HEAD_DIM>;
  var dkAcc: array<f32, HEAD_DIM>;
  var dvAcc: array<f32, HEAD_DIM>;
  if (valid) {
    let row = bIdx * p.Lk + kj;
    for (var d = 0u; d < HEAD_DIM; d++) {
      kv[d] = f32(k[row * p.kStride + p.kOff + h * HEAD_DIM + d]);
      vv[d] = f32(v[row * p.vStride + p.vOff + h * HEAD_DIM + d]);
    }
  }
  // With a causal mask, only queries at or after the workgroup's first key see it.
  var q0 = 0u;
  if (CAUSAL) { q0 = (wg.x * KEYS / ROWS) * ROWS; }

  for (; q0 < p.Lq; q0 += ROWS) {
    // Qs holds scale·q (scaled as in the forward); Os holds the dO tile (O is only
    // read for D, summed in the same order as dO·v so that one key gives ds = 0 exactly).
    for (var e = li; e < ROWS * HEAD_DIM; e += KEYS) {
      let qi = q0 + e / HEAD_DIM;
      let d = e % HEAD_DIM;
      var qx = 0.0;
      var ox = 0.0;
      if (qi < p.Lq) {
        qx = f32(q[(bIdx * p.Lq + qi) * p.qStride + p.qOff + h * HEAD_DIM + d]) * p.scale;
        ox = f32(dout[(bIdx * p.Lq + qi) * W + h * HEAD_DIM + d]);
      }
      Qs[e] = qx;
      Os[e] = ox;
    }
    for (var r = li; r < ROWS; r += KEYS) {
      let qi = q0 + r;
      var l = 0.0;
      var delta = 0.0;
      if (qi < p.Lq) {
        l = f32(lse[(bIdx * p.heads + h) * p.Lq + qi]);
        let oBase = (bIdx * p.Lq + qi) * W + h * HEAD_DIM;
        for (var d = 0u; d < HEAD_DIM; d++) { delta += f32(dout[oBase + d]) * f32(o[oBase + d]); }
      }
      rowLse[r] = l;
      rowDelta[r] = delta;
    }
    workgroupBarrier();
    if (valid) {
      var r0 = 0u;
      if (CAUSAL && kj > q0) { r0 = kj - q0; }
      let last = min(ROWS, p.Lq - q0);
      for (var r = r0; r < last; r++) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
          s += Qs[r * HEAD_DIM + d] * kv[d];
          dp += Os[r * HEAD_DIM + d] * vv[d];
        }
        let pr = exp(s - rowLse[r]);
        let ds = pr * (dp - rowDelta[r]);
        for (var d = 0u; d < HEAD_DIM; d++) {
          dvAcc[d] += pr * Os[r * HEAD_DIM + d];
          dkAcc[d] += ds * Qs[r * HEAD_DIM + d];
        }
      }
    }
    workgroupBarrier();
  }

  if (valid) {
    let base = (bIdx * p.Lk + kj) * W + h * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d++) {
      dk[base + d] = TDk(dkAcc[d]);
      dv[base + d] = TDv(dvAcc[d]);
    }
  }
}
