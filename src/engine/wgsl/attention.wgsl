// Scaled-dot-product attention, flash style: one thread per query row of one head
// streams over key tiles with an online softmax, so the Lq×Lk score matrix never
// exists (4096×4096 per head at SD's 64×64 latents).
// Q: [B, Lq, heads, HEAD_DIM] as rows of qStride values (a Linear output, or a
// slice of a fused one: offsets qOff/kOff/vOff), K/V likewise over Lk rows.
// O: [B, Lq, heads * HEAD_DIM]; lse [B, heads, Lq]: each row's log-sum-exp of the
// scaled scores (m + log l), for the backward. Defines: HEAD_DIM, KEYS (keys per
// shared tile), CAUSAL.
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
@group(0) @binding(4) var<storage, read_write> o: array<TO>;
@group(0) @binding(5) var<storage, read_write> lse: array<TLse>;

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
  var acc: array<f32, HEAD_DIM>;
  if (valid) {
    let qBase = (bIdx * p.Lq + qi) * p.qStride + p.qOff + h * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d++) { qv[d] = f32(q[qBase + d]) * p.scale; }
  }
  var m = -3.4e38;
  var l = 0.0;
  // With a causal mask, keys past the workgroup's last query are never needed.
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
        for (var d = 0u; d < HEAD_DIM; d++) { s += qv[d] * Ks[j * HEAD_DIM + d]; }
        let mNew = max(m, s);
        let correction = exp(m - mNew);
        let pj = exp(s - mNew);
        l = l * correction + pj;
        for (var d = 0u; d < HEAD_DIM; d++) { acc[d] = acc[d] * correction + pj * Vs[j * HEAD_DIM + d]; }
        m = mNew;
      }
    }
    workgroupBarrier();
  }

  if (valid) {
    let oBase = (bIdx * p.Lq + qi) * p.heads * HEAD_DIM + h * HEAD_DIM;
    let inv = 1.0 / l;
    for (var d = 0u; d < HEAD_DIM; d++) { o[oBase + d] = TO(acc[d] * inv); }
    lse[(bIdx * p.heads + h) * p.Lq + qi] = TLse(m + log(l));
  }
}
