// Bilinear resize of planes x [P, H, W] → [P, Ho, Wo], PyTorch F.interpolate(mode='bilinear',
// align_corners=False, antialias=False): source = (dst + 0.5)·(in/out) − 0.5, clamped at 0;
// the upper neighbour clamped at the last row/column.
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, sh: f32, sw: f32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.planes * p.Ho * p.Wo) { return; }
  let ox = i % p.Wo;
  let oy = (i / p.Wo) % p.Ho;
  let base = (i / (p.Wo * p.Ho)) * p.H * p.W;
  let fy = max((f32(oy) + 0.5) * p.sh - 0.5, 0.0);
  let fx = max((f32(ox) + 0.5) * p.sw - 0.5, 0.0);
  let y0 = u32(fy);
  let x0 = u32(fx);
  let y1 = min(y0 + 1u, p.H - 1u);
  let x1 = min(x0 + 1u, p.W - 1u);
  let ly = fy - f32(y0);
  let lx = fx - f32(x0);
  let top = (1.0 - lx) * f32(x[base + y0 * p.W + x0]) + lx * f32(x[base + y0 * p.W + x1]);
  let bottom = (1.0 - lx) * f32(x[base + y1 * p.W + x0]) + lx * f32(x[base + y1 * p.W + x1]);
  y[i] = TY((1.0 - ly) * top + ly * bottom);
}
