// Backward of cross_entropy.wgsl: dlogits[r, c] = dloss · (softmax(row)[c] − [c = label]) / B,
// one thread per row; a label outside [0, C) gives a NaN row.
struct Params { B: u32, C: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<TLogits>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> dloss: array<TDLoss>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<TDLogits>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = (wg.x + wg.y * p.groupsX) * 64u + lid;
  if (r >= p.B) { return; }
  let base = r * p.C;
  let label = labels[r];
  var m = f32(logits[base]);
  for (var c = 1u; c < p.C; c++) { m = max(m, f32(logits[base + c])); }
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) { s += exp(f32(logits[base + c]) - m); }
  let k = f32(dloss[0]) / f32(p.B);
  // A let, not a constant: a constant expression that is NaN fails shader creation.
  let nan_bits = 0x7fc00000u;
  let bad = label < 0 || label >= i32(p.C);
  for (var c = 0u; c < p.C; c++) {
    let prob = exp(f32(logits[base + c]) - m) / s;
    let g = k * (prob - select(0.0, 1.0, i32(c) == label));
    dlogits[base + c] = TDLogits(select(g, bitcast<f32>(nan_bits), bad));
  }
}
