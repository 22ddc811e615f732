// Derivatives of activations.wgsl's functions (same codes), for backward kernels.
// Include after activations.wgsl (uses erf_f32 and sigmoid_f32).

fn activate_grad(x: f32, act: u32, alpha: f32) -> f32 {
  switch act {
    // Φ(x) + x·φ(x)
    case 1u: { return 0.5 * (1.0 + erf_f32(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x); }
    case 2u: { let s = sigmoid_f32(1.702 * x); return s + 1.702 * x * s * (1.0 - s); }
    case 3u: { let s = sigmoid_f32(x); return s * (1.0 + x * (1.0 - s)); }
    case 4u: { let s = sigmoid_f32(x); return s * (1.0 - s); }
    // PyTorch's convention at the kink: x = 0 takes the negative side's slope.
    case 5u: { return select(alpha, 1.0, x > 0.0); }
    case 6u: { return select(0.0, 1.0, x > 0.0); }
    case 7u: { return 0.5 / sqrt(x); }
    case 8u: { return -0.5 / (x * sqrt(x)); }
    case 9u: { return sigmoid_f32(x); }
    default: { return 1.0; }
  }
}
