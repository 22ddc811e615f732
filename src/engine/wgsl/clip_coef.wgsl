// torch.nn.utils.clip_grad_norm_'s factor from the partial sums of squares of all gradients:
// norm = gradScale·√Σ, out = [min(1, maxNorm / (norm + 1e-6)), norm]. One workgroup.
//!include reduce.wgsl
struct Params { count: u32, maxNorm: f32, gradScale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.count; i += WG) { s += partial[i]; }
  let norm = sqrt(wg_sum(s, lid)) * p.gradScale;
  if (lid == 0u) {
    out[0] = min(1.0, p.maxNorm / (norm + 1e-6));
    out[1] = norm;
  }
}
