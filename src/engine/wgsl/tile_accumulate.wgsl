// Blends one tile into a full-size accumulator: for every tile pixel (i, j),
// acc[b, c, y0+i, x0+j] += w(i, j) · tile[b, c, i, j], and (for channel 0 of item
// 0) weights[y0+i, x0+j] += w(i, j). w ramps linearly from the tile's edges over
// `ramp` pixels (on sides that touch another tile), so overlapping tiles blend
// without seams once acc is divided by weights.
struct Params {
  B: u32, C: u32, th: u32, tw: u32, H: u32, W: u32, y0: u32, x0: u32,
  ramp: u32, rampTop: u32, rampBottom: u32, rampLeft: u32, rampRight: u32, n: u32, groupsX: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tile: array<TTile>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

fn edge_weight(d: u32, enabled: u32) -> f32 {
  if (enabled == 0u || p.ramp == 0u) { return 1.0; }
  return min(1.0, (f32(d) + 0.5) / f32(p.ramp));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  let x = i % p.tw;
  let y = (i / p.tw) % p.th;
  let bc = i / (p.tw * p.th);
  let w = edge_weight(y, p.rampTop) * edge_weight(p.th - 1u - y, p.rampBottom) *
          edge_weight(x, p.rampLeft) * edge_weight(p.tw - 1u - x, p.rampRight);
  let at = (bc * p.H + p.y0 + y) * p.W + p.x0 + x;
  acc[at] += w * f32(tile[i]);
  if (bc == 0u) { weights[(p.y0 + y) * p.W + p.x0 + x] += w; }
}
