// Pooling of planes x [P, H, W] → [P, Ho, Wo] with window K, stride S and padding PAD on
// every side: MODE 0 averages over the in-bounds elements only (PyTorch avg_pool2d with
// count_include_pad=False), MODE 1 takes the maximum (padding never wins, as max_pool2d).
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, K: u32, S: u32, pad: u32, groupsX: u32 }
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
  var s = 0.0;
  var m = -3.4028234663852886e38;
  var count = 0u;
  for (var a = 0u; a < p.K; a++) {
    let iy = i32(oy * p.S + a) - i32(p.pad);
    if (iy < 0 || iy >= i32(p.H)) { continue; }
    for (var b = 0u; b < p.K; b++) {
      let ix = i32(ox * p.S + b) - i32(p.pad);
      if (ix < 0 || ix >= i32(p.W)) { continue; }
      let v = f32(x[base + u32(iy) * p.W + u32(ix)]);
      s += v;
      m = max(m, v);
      count++;
    }
  }
  if (MODE == 0u) { y[i] = TY(s / f32(count)); } else { y[i] = TY(m); }
}
