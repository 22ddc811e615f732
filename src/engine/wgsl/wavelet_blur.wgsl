// One level of StableSR's wavelet decomposition on [planes, H, W]: the 3×3 kernel
// [1 2 1; 2 4 2; 1 2 1] / 16 at dilation r over the image padded by r with
// replicate padding (F.pad(mode='replicate') then F.conv2d(dilation=r)), i.e. taps
// that fall outside clamp to the nearest edge pixel, for any r.
struct Params { H: u32, W: u32, r: u32, n: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.n) { return; }
  let base = (i / (p.H * p.W)) * p.H * p.W;
  let oy = i32((i % (p.H * p.W)) / p.W);
  let ox = i32(i % p.W);
  let r = i32(p.r);
  var s = 0.0;
  for (var dy = -1; dy <= 1; dy++) {
    let sy = u32(clamp(oy + dy * r, 0, i32(p.H) - 1));
    for (var dx = -1; dx <= 1; dx++) {
      let sx = u32(clamp(ox + dx * r, 0, i32(p.W) - 1));
      // weights 1 (corner), 2 (edge), 4 (centre)
      s += f32((2 - abs(dy)) * (2 - abs(dx))) * f32(x[base + sy * p.W + sx]);
    }
  }
  y[i] = TY(s / 16.0);
}
