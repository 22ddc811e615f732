// Activation functions shared by the unary kernel and fused matmul/conv epilogues.
// Codes: 0 none, 1 gelu (erf), 2 quick_gelu, 3 silu, 4 sigmoid, 5 leaky_relu(alpha), 6 relu,
// 7 sqrt, 8 rsqrt (1/sqrt), 9 softplus.

// erf from the complementary error function's Chebyshev fit (Numerical Recipes
// erfcc): relative error below 1.2e-7 everywhere, so GELU matches PyTorch's exact
// erf GELU to f32 rounding (WGSL has no erf builtin).
fn erf_f32(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
          t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
          t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn sigmoid_f32(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

fn activate(x: f32, act: u32, alpha: f32) -> f32 {
  switch act {
    case 1u: { return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752)); }
    case 2u: { return x * sigmoid_f32(1.702 * x); }
    case 3u: { return x * sigmoid_f32(x); }
    case 4u: { return sigmoid_f32(x); }
    case 5u: { return select(alpha * x, x, x >= 0.0); }
    case 6u: { return max(x, 0.0); }
    case 7u: { return sqrt(x); }
    case 8u: { return inverseSqrt(x); }
    // log(1 + e^x) without overflow: max(x, 0) + log(1 + e^−|x|).
    case 9u: { return max(x, 0.0) + log(1.0 + exp(-abs(x))); }
    default: { return x; }
  }
}
