// DISTS' L2 pooling of planes x [P, H, W] → [P, Ho, Wo]: square, depthwise 3×3 filter
// f (row-major, the same for every plane), stride 2, zero padding 1, then sqrt(· + 1e-12).
// Ho = ⌊(H − 1) / 2⌋ + 1 (PyTorch's conv output size for k 3, s 2, p 1).
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read> f: array<TF>;
@group(0) @binding(3) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.planes * p.Ho * p.Wo) { return; }
  let ox = i % p.Wo;
  let oy = (i / p.Wo) % p.Ho;
  let base = (i / (p.Wo * p.Ho)) * p.H * p.W;
  var s = 0.0;
  for (var a = 0u; a < 3u; a++) {
    let iy = i32(oy * 2u + a) - 1;
    if (iy < 0 || iy >= i32(p.H)) { continue; }
    for (var b = 0u; b < 3u; b++) {
      let ix = i32(ox * 2u + b) - 1;
      if (ix < 0 || ix >= i32(p.W)) { continue; }
      let v = f32(x[base + u32(iy) * p.W + u32(ix)]);
      s += f32(f[a * 3u + b]) * v * v;
    }
  }
  y[i] = TY(sqrt(s + 1e-12));
}
