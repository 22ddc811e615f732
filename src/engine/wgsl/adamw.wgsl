// One torch.optim.AdamW step (amsgrad off) on one f32 parameter tensor, in place, in the
// order torch's single-tensor loop computes it:
//   g = grad · gradScale (· clip[0] when CLIP)    p ← p·(1 − lr·wd)
//   m ← m + (g − m)(1 − β1)                      v ← β2·v + (1 − β2)·g²
//   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
// The host passes decay = 1 − lr·wd, stepSize = lr/(1 − β1ᵗ), bc2Sqrt = √(1 − β2ᵗ).
struct Params {
  n: u32, groupsX: u32, beta1: f32, beta2: f32, eps: f32,
  decay: f32, stepSize: f32, bc2Sqrt: f32, gradScale: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<TGrad>;
// [clip coefficient, global norm] from clip_coef.wgsl.
@group(0) @binding(5) var<storage, read> clip: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  var g = f32(grad[i]) * p.gradScale;
  if (CLIP) { g *= clip[0]; }
  let mi = m[i] + (g - m[i]) * (1.0 - p.beta1);
  let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = param[i] * p.decay - p.stepSize * mi / (sqrt(vi) / p.bc2Sqrt + p.eps);
}
