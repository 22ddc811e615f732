// PyTorch's F.pad(mode='reflect') of [planes, H, W] → [planes, OH, OW]: rows and
// columns outside the image mirror about the edge pixel without repeating it
// (-1 → 1, H → H-2), which needs padding < H and < W (checked by the op).
struct Params { H: u32, W: u32, OH: u32, OW: u32, top: u32, left: u32, n: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

fn reflect(i: i32, n: u32) -> u32 {
  let a = abs(i);
  return u32(select(a, 2 * (i32(n) - 1) - a, a >= i32(n)));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  let plane = i / (p.OH * p.OW);
  let r = i % (p.OH * p.OW);
  let sy = reflect(i32(r / p.OW) - i32(p.top), p.H);
  let sx = reflect(i32(r % p.OW) - i32(p.left), p.W);
  y[i] = TY(f32(x[(plane * p.H + sy) * p.W + sx]));
}
