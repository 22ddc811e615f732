// Average pooling [N·C, H, W] → [N·C, Ho, Wo], window K, stride S, no padding, floor mode
// (nn.AvgPool2d(K, S)): the window's values summed in row-major order, divided by K².
struct Params { H: u32, W: u32, Ho: u32, Wo: u32, planes: u32, K: u32, S: u32, groupsX: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<TX>;
@group(0) @binding(2) var<storage, read_write> y: array<TY>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * p.groupsX) * 256u + lid;
  if (i >= p.planes * p.Ho * p.Wo) { return; }
  let ox = i % p.Wo;
  let oy = (i / p.Wo) % p.Ho;
  let plane = i / (p.Wo * p.Ho);
  let base = plane * p.H * p.W + oy * p.S * p.W + ox * p.S;
  var s = 0.0;
  for (var j = 0u; j < p.K; j++) {
    for (var k = 0u; k < p.K; k++) { s += f32(x[base + j * p.W + k]); }
  }
  y[i] = TY(s / f32(p.K * p.K));
}
