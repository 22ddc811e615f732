// Softmax cross-entropy: logits [B, C], labels [B] (i32) → out[0] = mean over rows of
// logsumexp(row) − row[label], by one workgroup (a thread per row: C is a class count).
// A label outside [0, C) gives NaN rather than reading out of bounds.
//!include reduce.wgsl
struct Params { B: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<TLogits>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<TOut>;

fn logsumexp(base: u32) -> f32 {
  var m = f32(logits[base]);
  for (var c = 1u; c < p.C; c++) { m = max(m, f32(logits[base + c])); }
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) { s += exp(f32(logits[base + c]) - m); }
  return m + log(s);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  // A let, not a constant: a constant expression that is NaN fails shader creation.
  let nan_bits = 0x7fc00000u;
  var s = 0.0;
  for (var r = lid; r < p.B; r += WG) {
    let label = labels[r];
    if (label < 0 || label >= i32(p.C)) {
      s += bitcast<f32>(nan_bits);
    } else {
      s += logsumexp(r * p.C) - f32(logits[r * p.C + u32(label)]);
    }
  }
  s = wg_sum(s, lid);
  if (lid == 0u) { out[0] = TOut(s / f32(p.B)); }
}
